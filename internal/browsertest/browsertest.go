// Package browsertest starts a real headless Chromium for the tests that
// look at a page: Mission Control's and the Grafana dashboard's.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// Chromium finds Debian's Chromium (or Chrome). Without one the test
// skips, except in CI (the variable CI is set), where it fails.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("Chromium is not installed: the browser tests need it in CI (apt-get install chromium; .ci/run installs it)")
	}
	t.Skip("Chromium is not installed: install the package chromium (apt-get install chromium) to run the browser tests")
	return ""
}

// Open starts a headless Chromium with one tab of width by height pixels
// and returns the tab's context; the test's end closes the browser.
func Open(t testing.TB, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium(t)), chromedp.WindowSize(width, height))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}
