// Package console holds Mission Control, the web console that package api
// serves at /mission-control/: its page, scripts and styles, embedded in
// the binary, so that serving it needs no other file and no build step.
package console

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files is the console's files: index.html and the assets it loads.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // "static" is a valid path, embedded above
	}
	return sub
}
