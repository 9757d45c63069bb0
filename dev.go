package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/triggerd/triggerd/auth"
	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/store/localpg"
)

// devConfig is the quick-start configuration; the placeholders are filled
// with the throwaway database, the listen address, a fresh secret and the
// receiver's url.
const devConfig = `# Written by "triggerd dev"; removed when it stops.
listen: %s
node_id: dev
store:
  url: %s
projects:
  - id: demo
    secrets:
      - {kid: dev, alg: HS256, secret: %s}
    rules:
      default: authenticated
      sent-email: allow
    triggers:
      - name: email-sender
        type: sent-email
        url: %s
        retries: 3
        retry_backoff: {initial: 1s, max: 1m}
`

// devCommand is "triggerd dev": a throwaway Postgres, a demo project with
// a receiver that prints each delivery, and a node serving them, until Ctrl-C.
func devCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:4122", "the API's address")
	format := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(*format, stderr)
	if err != nil {
		return err
	}

	fmt.Fprintln(stdout, "Starting a throwaway Postgres...")
	cluster, err := localpg.Start(ctx, localpg.Options{})
	if err != nil {
		return fmt.Errorf("dev needs a local PostgreSQL: %w", err)
	}
	defer cluster.Close()

	dir, err := os.MkdirTemp("", "triggerd-dev-")
	if err != nil {
		return fmt.Errorf("make a folder for the dev config: %w", err)
	}
	defer os.RemoveAll(dir)

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("make a secret: %w", err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("start the demo receiver: %w", err)
	}
	receiverURL := "http://" + rl.Addr().String() + "/deliveries"
	storeURL := cluster.URL("postgres")
	path := filepath.Join(dir, "triggerd.yaml")
	text := fmt.Sprintf(devConfig, *listen, storeURL, hex.EncodeToString(secret), receiverURL)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("write the dev config: %w", err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	keys, err := keyrings(cfg)
	if err != nil {
		return err
	}
	recv := &http.Server{Handler: &receiver{out: stdout, keys: keys["demo"], node: cfg.NodeID}, ReadHeaderTimeout: 10 * time.Second}
	go recv.Serve(rl)
	defer recv.Close()

	// A token for types whose rule is authenticated, as a client would hold.
	token, err := keys["demo"].Sign(jwt.MapClaims{"sub": "dev", "exp": time.Now().Add(24 * time.Hour).Unix()})
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, func(addr string) {
		queue := "http://" + addr + "/v1/api/demo/event-triggers/queue"
		fmt.Fprintf(stdout, `
triggerd dev is running.
  API       http://%s
  receiver  %s (prints each delivery below)
  store     %s
  config    %s

Queue an event, then a synchronous one that waits for the receiver's response:
  curl -s -X POST %s -d '{"type":"sent-email","data":{"to":"user1@email.com"}}'
  curl -s -X POST %s -d '{"type":"sent-email","data":{"to":"user1@email.com"},"isSynchronous":true}'
Other types need a token signed with the project's secret (rule authenticated); this one lasts a day:
  curl -s -X POST %s -H 'Authorization: Bearer %s' -d '{"type":"user-signed-up","data":{"id":7}}'
  (no trigger handles user-signed-up, so it is accepted and stored nowhere)
Follow event_logs from another terminal:
  go run . tail --config %s --follow

Ctrl-C stops everything and deletes the throwaway database.

`, addr, receiverURL, storeURL, path, queue, queue, queue, token, path)
	})
}

// receiver is the dev webhook: it checks X-SC-Token, prints each delivery
// and answers with a response that synchronous callers get back.
type receiver struct {
	out  io.Writer
	keys *auth.Keyring
	node string
	mu   sync.Mutex // one delivery printed at a time
}

// ServeHTTP takes one delivery: it prints it and answers with a response.
func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ev struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	tokenErr := rc.verify(r.Header.Get("X-SC-Token"))
	note := "X-SC-Token verified"
	if tokenErr != nil {
		note = "X-SC-Token rejected: " + tokenErr.Error()
	}
	rc.mu.Lock()
	fmt.Fprintf(rc.out, "receiver: %s %s (%s)\n  data: %s\n", ev.Type, ev.ID, note, ev.Data)
	rc.mu.Unlock()
	if tokenErr != nil {
		http.Error(w, note, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"response": map[string]any{
		"received": ev.ID, "at": time.Now().UTC().Format(time.RFC3339Nano)}})
}

// verify checks a delivery's X-SC-Token the way any receiver would: signed
// with the project's secret, not expired, and naming the sending node.
func (rc *receiver) verify(token string) error {
	claims, err := rc.keys.Verify(token)
	if err != nil {
		return err
	}
	if claims["id"] != rc.node {
		return fmt.Errorf("token names node %v, not %s", claims["id"], rc.node)
	}
	return nil
}
