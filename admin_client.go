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
	"os"
	"strings"
	"time"

	"github.com/triggerd/triggerd/config"
)

// adminFlags are the flags of the commands that call a running node's
// admin API: where the node is, and who logs in.
type adminFlags struct {
	config string
	addr   string
	user   string
}

// register adds the flags to fs.
func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", os.Getenv("TRIGGERD_CONFIG"), "the node's config file, for its address and admin user (default: $TRIGGERD_CONFIG)")
	fs.StringVar(&f.addr, "addr", os.Getenv("TRIGGERD_ADDR"), "the node's API address, host:port (default: $TRIGGERD_ADDR, else the config's listen)")
	fs.StringVar(&f.user, "user", os.Getenv("TRIGGERD_ADMIN_USER"), "the admin user (default: $TRIGGERD_ADMIN_USER, else the config's admin.user)")
}

// adminPasswordEnv holds the admin password when the config does not
// (it has password_hash, or no config is given).
const adminPasswordEnv = "TRIGGERD_ADMIN_PASSWORD"

// adminClient calls a running node's admin API as its admin.
type adminClient struct {
	base     string // http://host:port
	user     string
	password string
	token    string // once logged in
	http     *http.Client
}

// client builds the client the flags describe: the config gives what the
// flags and the environment leave out.
func (f *adminFlags) client() (*adminClient, error) {
	c := &adminClient{user: f.user, password: os.Getenv(adminPasswordEnv), http: &http.Client{Timeout: time.Minute}}
	addr := f.addr
	if f.config != "" {
		cfg, err := config.Load(f.config)
		if err != nil {
			return nil, err
		}
		if addr == "" {
			addr = cfg.Listen
		}
		if a := cfg.Admin; a != nil {
			if c.user == "" {
				c.user = a.User
			}
			if c.password == "" {
				c.password = a.Password
			}
		}
	}
	switch {
	case addr == "":
		return nil, errors.New("which node? pass --config FILE (or set TRIGGERD_CONFIG), or --addr host:port")
	case c.user == "":
		return nil, errors.New("which admin? the config has no admin section: pass --user, or set TRIGGERD_ADMIN_USER")
	case c.password == "":
		return nil, fmt.Errorf("no admin password: set %s (the config gives only a password_hash, or no config is given)", adminPasswordEnv)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q is not host:port", addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // a node listening on every address
	}
	c.base = "http://" + net.JoinHostPort(host, port)
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

// do logs in when it has no token yet, sends a request to path under
// /v1/admin with body (nil: none), and decodes a 2xx answer into out (nil:
// dropped). An error answer becomes an *apiError.
func (c *adminClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	if c.token == "" {
		login, _ := json.Marshal(map[string]string{"user": c.user, "password": c.password})
		var tok struct {
			Token string `json:"token"`
		}
		if err := c.send(ctx, http.MethodPost, "/login", login, &tok); err != nil {
			return fmt.Errorf("log in as %s: %w", c.user, err)
		}
		c.token = tok.Token
	}
	return c.send(ctx, method, path, body, out)
}

// send makes one request.
func (c *adminClient) send(ctx context.Context, method, path string, body []byte, out any) error {
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
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the node running, at this address?)", method, path, err)
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
