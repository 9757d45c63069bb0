package api_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"
)

// browser is a client that keeps cookies, as a browser on the console does.
type browser struct {
	f      *fixture
	client *http.Client
	csrf   string
}

func newBrowser(t *testing.T, f *fixture) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{f: f, client: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// answer is what the tests look at in a response, read and closed.
type answer struct {
	StatusCode int
	Header     http.Header
	cookies    []*http.Cookie
}

// Cookies are the cookies the answer sets.
func (a answer) Cookies() []*http.Cookie { return a.cookies }

// send sends a request with the browser's cookies, and the CSRF token
// when csrf is true, and decodes a JSON answer (nil for an empty body).
func (b *browser) send(t *testing.T, method, path, body string, csrf bool) (answer, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, b.f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if csrf {
		req.Header.Set("X-CSRF-Token", b.csrf)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %v: %q", method, path, err, raw)
		}
	}
	if strings.Contains(string(raw), b.f.dbURL) {
		t.Errorf("%s %s names the store's URL: %s", method, path, raw)
	}
	return answer{resp.StatusCode, resp.Header, resp.Cookies()}, out
}

// do sends a request of the test's making with the browser's client.
func (b *browser) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return answer{resp.StatusCode, resp.Header, resp.Cookies()}
}

// login logs the browser in as the admin.
func (b *browser) login(t *testing.T) answer {
	t.Helper()
	resp, out := b.send(t, http.MethodPost, "/mission-control/login", `{"user":"ops","password":"`+adminPassword+`"}`, false)
	if resp.StatusCode != 200 {
		t.Fatalf("console login: %d %v", resp.StatusCode, out)
	}
	b.csrf, _ = out["csrf"].(string)
	if out["user"] != "ops" || len(b.csrf) < 40 {
		t.Fatalf("console login answered %v, want the user and a CSRF token", out)
	}
	return resp
}

// TestConsoleSessions checks Mission Control's login: the cookie's
// attributes, the session it opens on the admin API, CSRF on every
// change, logout on the store (the old cookie no longer works), and the
// refusals.
func TestConsoleSessions(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	b := newBrowser(t, f)

	// Not logged in: the console's session and the admin API refuse.
	if resp, out := b.send(t, http.MethodGet, "/mission-control/session", "", false); resp.StatusCode != 401 ||
		!strings.Contains(out["error"].(string), "not logged in") {
		t.Fatalf("session before login: %d %v", resp.StatusCode, out)
	}
	if resp, out := b.send(t, http.MethodPost, "/mission-control/login", `{"user":"ops","password":"wrong-password-1"}`, false); resp.StatusCode != 401 ||
		out["error"] != "wrong user or password" || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong password: %d %v %v", resp.StatusCode, out, resp.Cookies())
	}
	req, _ := http.NewRequest(http.MethodPost, f.url+"/mission-control/login", strings.NewReader(`{"user":"ops","password":"`+adminPassword+`"}`))
	req.Header.Set("Origin", "https://evil.example")
	if a := b.do(t, req); a.StatusCode != 403 || len(a.Cookies()) != 0 {
		t.Fatalf("a login posted from another site's page: %d %v, want 403 and no cookie", a.StatusCode, a.Cookies())
	}

	resp := b.login(t)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "triggerd_session" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", cookie)
	}
	if _, out := b.send(t, http.MethodGet, "/mission-control/session", "", false); out["csrf"] != b.csrf ||
		len(out["projects"].([]any)) != 1 {
		t.Fatalf("session after login: %v", out)
	}

	// The cookie opens the admin API: reads without the CSRF token,
	// changes only with it.
	if resp, out := b.send(t, http.MethodGet, "/v1/admin/counts", "", false); resp.StatusCode != 200 {
		t.Fatalf("GET with the session: %d %v", resp.StatusCode, out)
	}
	event := `{"type":"open","data":{"n":1}}`
	if resp, out := b.send(t, http.MethodPost, "/v1/admin/projects/demo/events", event, false); resp.StatusCode != 403 ||
		!strings.Contains(out["error"].(string), "X-CSRF-Token") {
		t.Fatalf("a change without the CSRF token: %d %v, want 403 naming X-CSRF-Token", resp.StatusCode, out)
	}
	before := f.count(t)
	good := b.csrf
	b.csrf = good[:len(good)-1] + "x"
	if resp, out := b.send(t, http.MethodPost, "/v1/admin/projects/demo/events", event, true); resp.StatusCode != 403 {
		t.Fatalf("a change with a wrong CSRF token: %d %v, want 403", resp.StatusCode, out)
	}
	if got := f.count(t); got != before {
		t.Fatalf("refused changes stored %d rows", got-before)
	}
	b.csrf = good
	if resp, out := b.send(t, http.MethodPost, "/v1/admin/projects/demo/events", event, true); resp.StatusCode != 200 {
		t.Fatalf("a change with the CSRF token: %d %v", resp.StatusCode, out)
	}

	// The CSRF token is no bearer token, and the cookie no token either.
	if status, _ := f.do(t, http.MethodGet, "/v1/admin/counts", "", "Bearer "+b.csrf); status != 401 {
		t.Errorf("the CSRF token as a bearer token: %d, want 401", status)
	}
	if status, _ := f.do(t, http.MethodGet, "/v1/admin/counts", "", "Bearer "+cookie.Value); status != 401 {
		t.Errorf("the session id as a bearer token: %d, want 401", status)
	}

	// Logout needs the token, then ends the session in the store: the
	// old cookie, sent again by hand, no longer works.
	if resp, _ := b.send(t, http.MethodPost, "/mission-control/logout", "", false); resp.StatusCode != 403 {
		t.Fatalf("logout without the CSRF token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := b.send(t, http.MethodPost, "/mission-control/logout", "", true); resp.StatusCode != 204 {
		t.Fatalf("logout: %d, want 204", resp.StatusCode)
	}
	old, _ := http.NewRequest(http.MethodGet, f.url+"/v1/admin/counts", nil)
	old.AddCookie(&http.Cookie{Name: "triggerd_session", Value: cookie.Value})
	if a := newBrowser(t, f).do(t, old); a.StatusCode != 401 {
		t.Fatalf("the cookie of a logged-out session: %d, want 401", a.StatusCode)
	}
}

// TestConsoleSessionsExpire checks that a session ends at session_ttl.
func TestConsoleSessionsExpire(t *testing.T) {
	t.Parallel()
	f := setup(t, "admin: {user: ops, password: "+adminPassword+", secret: "+adminSecret+", session_ttl: 2s}\n")
	b := newBrowser(t, f)
	var id string
	for _, c := range b.login(t).Cookies() {
		if c.Name == "triggerd_session" {
			id = c.Value
		}
	}
	header := http.Header{"Cookie": {"triggerd_session=" + id}}
	if status, out := f.send(t, http.MethodGet, "/v1/admin/counts", "", header); status != 200 {
		t.Fatalf("GET with a fresh session: %d %v", status, out)
	}
	// A browser drops the cookie at its expiry; the store ends the
	// session then too, for a cookie sent on.
	time.Sleep(2100 * time.Millisecond)
	status, out := f.send(t, http.MethodGet, "/v1/admin/counts", "", header)
	if status != 401 || !strings.Contains(out["error"].(string), "session has ended") {
		t.Fatalf("GET after session_ttl: %d %v, want 401 saying the session ended", status, out)
	}
}

// TestConsolePages checks how the console's files are served: the page
// and its assets with a strict CSP, and nothing else.
func TestConsolePages(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	b := newBrowser(t, f)
	resp, _ := b.send(t, http.MethodGet, "/mission-control", "", false)
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/mission-control/" {
		t.Errorf("/mission-control: %d to %q, want a redirect to /mission-control/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = b.send(t, http.MethodGet, "/mission-control/", "", false)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") ||
		resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("/mission-control/: %d %v", resp.StatusCode, resp.Header)
	}
	for _, path := range []string{"/mission-control/assets/index.html", "/mission-control/assets/nothing.js",
		"/mission-control/assets/..%2fconsole.go", "/mission-control/assets/", "/mission-control/other"} {
		if resp, _ := b.send(t, http.MethodGet, path, "", false); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}

	off := setup(t, "")
	if status, out := off.do(t, http.MethodGet, "/mission-control/", "", ""); status != 404 ||
		!strings.Contains(out["error"].(string), "Mission Control is not enabled on this node") {
		t.Errorf("the console without an admin section: %d %v", status, out)
	}
}

// TestLiveFeed checks the stream of changed rows: "ready" once it
// listens, then the id of a row queued after, as it is created and as
// it is delivered; unknown parameters are refused.
func TestLiveFeed(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	if status, out := f.do(t, http.MethodGet, "/v1/admin/events/stream?status=failed", "", token); status != 400 ||
		!strings.Contains(out["error"].(string), "takes no parameters") {
		t.Errorf("stream with a parameter: %d %v", status, out)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, f.url+"/v1/admin/events/stream", nil)
	req.Header.Set("Authorization", token)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed below, read by the goroutine
	if err != nil {
		t.Fatal(err)
	}
	body := resp.Body
	defer body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	events := make(chan [2]string, 100)
	go func() {
		sc := bufio.NewScanner(body)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				events <- [2]string{name, strings.TrimPrefix(line, "data: ")}
			}
		}
		close(events)
	}()
	next := func() [2]string {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event on the stream within 5 s")
		}
		return [2]string{}
	}
	if e := next(); e[0] != "ready" {
		t.Fatalf("first event %v, want ready", e)
	}
	batch := f.queueOK(t, `{"type":"open","data":{"live":true}}`)
	row := f.rowOf(t, token, batch, "processed")
	seen := 0
	for seen < 1 {
		e := next()
		var data struct {
			IDs  []string `json:"ids"`
			More int      `json:"more"`
		}
		if e[0] != "changed" || json.Unmarshal([]byte(e[1]), &data) != nil {
			t.Fatalf("event %v, want changed with ids", e)
		}
		for _, id := range data.IDs {
			if id == row["id"] {
				seen++
			}
		}
	}
}

// TestActivity checks the outcomes per minute that the console's
// overview draws.
func TestActivity(t *testing.T) {
	t.Parallel()
	f := adminNode(t)
	token := f.login(t)
	for range 3 {
		f.queueOK(t, `{"type":"open","data":{}}`)
	}
	broken := f.queueOK(t, `{"type":"broken","data":{}}`)
	f.rowOf(t, token, broken, "failed")
	var minutes []any
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, out := f.do(t, http.MethodGet, "/v1/admin/activity?project=demo", "", token)
		if status != 200 {
			t.Fatalf("activity: %d %v", status, out)
		}
		minutes, _ = out["minutes"].([]any)
		got := map[string][2]float64{}
		for _, m := range minutes {
			m := m.(map[string]any)
			c := got[m["trigger"].(string)]
			got[m["trigger"].(string)] = [2]float64{c[0] + m["processed"].(float64), c[1] + m["failed"].(float64)}
		}
		if got["open"] == [2]float64{3, 0} && got["broken"] == [2]float64{0, 1} {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("activity %v, want open 3 processed and broken 1 failed", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, q := range []string{"since=yesterday", "since=2020-01-01T00:00:00Z", "node=x"} {
		if status, out := f.do(t, http.MethodGet, "/v1/admin/activity?"+q, "", token); status != 400 {
			t.Errorf("activity?%s: %d %v, want 400", q, status, out)
		}
	}
}
