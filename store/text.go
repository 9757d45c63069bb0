package store

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// Text returns s as text that a Postgres text column takes: valid UTF-8
// without NUL. Each NUL byte, and each byte that is not part of a valid
// UTF-8 character, becomes the four characters \xNN; the rest is kept.
// Text of its own result returns it unchanged. Writes of free-form text
// that comes from outside (webhook answers, error messages quoting them)
// go through it, so that no such text can make a write fail.
func Text(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == 0 || (r == utf8.RuneError && size == 1) {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// IsPermanent reports whether a write failed because Postgres refused its
// data (a data exception or an integrity constraint, SQLSTATE classes 22
// and 23): writing the same data again fails the same way. Other errors,
// such as a lost connection or a server restarting, may pass on a retry.
func IsPermanent(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	class := pgErr.Code[:min(2, len(pgErr.Code))]
	return class == "22" || class == "23"
}
