package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
)

// adminConnection is the help text shared by the commands that call a
// running node's admin API, on where the node is and who logs in.
const adminConnection = `Connection: --config FILE (or $TRIGGERD_CONFIG) gives the node's address
(listen) and signs an admin token with its admin secret; --url URL (or
$TRIGGERD_URL) names the node instead of listen; without a config's admin
section, log in with $TRIGGERD_ADMIN_USER and $TRIGGERD_ADMIN_PASSWORD, or
pass a token from POST /v1/admin/login in $TRIGGERD_ADMIN_TOKEN.
`

// adminFlags are the flags of the commands that call a running node's
// admin API: where the node is, and its config.
type adminFlags struct {
	config string
	url    string
}

// register adds the flags to fs.
func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", os.Getenv("TRIGGERD_CONFIG"), "config file: the node's listen address and admin secret (default: $TRIGGERD_CONFIG)")
	fs.StringVar(&f.url, "url", os.Getenv("TRIGGERD_URL"), "the node's API, as http://host:port (default: $TRIGGERD_URL, else the config's listen)")
}

// adminClient calls the admin API of one node with a token.
type adminClient struct {
	base  string // http://host:port
	token string
	http  *http.Client
}

// client finds the node and a token for command (named in errors): a
// token from the environment, else a login with the user and password
// from the environment, else one signed with the config's admin secret.
func (f *adminFlags) client(ctx context.Context, command string) (*adminClient, error) {
	var cfg *config.Config
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return nil, err
		}
	}
	baseURL := f.url
	if baseURL == "" {
		if cfg == nil {
			return nil, fmt.Errorf("%s needs the node's address: pass --config FILE (its listen) or --url http://host:port, or set TRIGGERD_CONFIG or TRIGGERD_URL", command)
		}
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("the config's listen %q is not host:port", cfg.Listen)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1" // a node listening on every address
		}
		baseURL = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: write the node's API as http://host:port", baseURL)
	}
	c := &adminClient{base: strings.TrimSuffix(baseURL, "/"), http: &http.Client{Timeout: time.Minute}}
	user, password := os.Getenv("TRIGGERD_ADMIN_USER"), os.Getenv("TRIGGERD_ADMIN_PASSWORD")
	switch {
	case os.Getenv("TRIGGERD_ADMIN_TOKEN") != "":
		c.token = os.Getenv("TRIGGERD_ADMIN_TOKEN")
	case user != "" || password != "":
		if user == "" || password == "" {
			return nil, errors.New("set both TRIGGERD_ADMIN_USER and TRIGGERD_ADMIN_PASSWORD to log in")
		}
		var login struct {
			Token string `json:"token"`
		}
		body, _ := json.Marshal(map[string]string{"user": user, "password": password})
		if err := c.do(ctx, http.MethodPost, "/login", body, &login); err != nil {
			return nil, fmt.Errorf("log in as %s: %w", user, err)
		}
		c.token = login.Token
	case cfg != nil && cfg.Admin != nil:
		token, _, err := auth.NewAdminKeys(cfg.Admin.Secret, cfg.Admin.TokenTTL.Std()).Sign(cfg.Admin.User, time.Now())
		if err != nil {
			return nil, err
		}
		c.token = token
	case cfg != nil:
		return nil, fmt.Errorf("%s has no admin section: add one (and restart the node), or set TRIGGERD_ADMIN_USER and TRIGGERD_ADMIN_PASSWORD, or TRIGGERD_ADMIN_TOKEN", f.config)
	default:
		return nil, fmt.Errorf("%s needs admin credentials: pass --config FILE with an admin section, or set TRIGGERD_ADMIN_USER and TRIGGERD_ADMIN_PASSWORD, or TRIGGERD_ADMIN_TOKEN", command)
	}
	return c, nil
}

// apiError is an error answer of the admin API.
type apiError struct {
	Status  int
	Message string
	Field   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// do sends a request to path under /v1/admin with body (nil: none), and
// decodes a 2xx answer into out (nil: dropped). An error answer becomes an
// *apiError.
func (c *adminClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/v1/admin"+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the node running, and is that its address?)", method, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(answer, &struct {
			Error *string `json:"error"`
			Field *string `json:"field"`
		}{&e.Message, &e.Field}) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(answer))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %w", method, path, err)
	}
	return nil
}
