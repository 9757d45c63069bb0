package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// TestTriggersCommand applies, lists, gets and deletes a trigger of a
// running node with "triggerd triggers", and checks what it says of a
// bad trigger and of a config trigger.
func TestTriggersCommand(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	cfg := nodetest.WriteConfig(t, "node-1", url, schema, "      - {name: base, type: base, url: 'http://127.0.0.1:1/'}\n")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "admin: {user: ops, password: cli-test-password, secret: cli-test-secret-0123456789abcdef0}")
	f.Close()
	node := nodetest.Start(t, cfg)
	triggers := func(sub string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"triggers", sub, "--config", cfg, "--url", "http://" + node.Addr}, args...), &out, &errOut)
		return out.String(), err
	}
	file := filepath.Join(t.TempDir(), "t.yaml")
	if err := os.WriteFile(file, []byte("name: hook\ntype: work\nurl: http://127.0.0.1:9/hook\nretries: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := triggers("apply", "-f", file); err != nil || !strings.Contains(out, `"defined_in": "store"`) {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := triggers("list")
	if err != nil || !strings.Contains(out, "demo     base  base  config") || !strings.Contains(out, "demo     hook  work  store       http://127.0.0.1:9/hook") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err := triggers("get", "hook"); err != nil || !strings.Contains(out, `"retries": 2`) {
		t.Fatalf("get: %v\n%s", err, out)
	}
	if err := os.WriteFile(file, []byte("name: hook\ntype: work\nurl: ftp://h/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var apiErr *apiError
	if _, err := triggers("apply", "-f", file); !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Field != "url" ||
		!strings.Contains(err.Error(), "line 3: url: is not an http or https URL") {
		t.Fatalf("a bad trigger: %v", err)
	}
	if _, err := triggers("delete", "base"); err == nil || !strings.Contains(err.Error(), `409 Conflict: trigger "base": the trigger is defined in the config file`) {
		t.Fatalf("deleting a config trigger: %v", err)
	}
	if out, err := triggers("delete", "hook"); err != nil || !strings.Contains(out, "deleted trigger hook of project demo; 0 staged rows cancelled") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if _, err := triggers("get", "hook"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("get after delete: %v", err)
	}
}
