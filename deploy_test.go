package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/triggerd/triggerd/config"
	"github.com/triggerd/triggerd/dispatch/dispatchtest"
	"github.com/triggerd/triggerd/internal/waittest"
	"github.com/triggerd/triggerd/node/nodetest"
	"github.com/triggerd/triggerd/store/pgtest"
)

// composeFile is what the tests read of docker-compose.yml.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]any    `yaml:"depends_on"`
	Profiles    []string          `yaml:"profiles"`
}

// env looks a variable up in the service's environment only, as the
// container sees it.
func (s composeService) env(name string) (string, bool) {
	v, ok := s.Environment[name]
	return v, ok
}

// mount is the container path a bind mount of host path puts it at.
func (s composeService) mount(host string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if parts[0] == host {
			return parts[1]
		}
	}
	return ""
}

// dockerfile is what the tests read of the Dockerfile's final stage.
type dockerfile struct {
	stages                int
	user, entrypoint, cmd string
	env                   map[string]string
	expose, healthcheck   string
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{env: map[string]string{}}
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(word) {
		case "FROM":
			d.stages++
			d.user, d.env = "", map[string]string{}
		case "USER":
			d.user = rest
		case "ENV":
			k, v, _ := strings.Cut(rest, "=")
			d.env[k] = v
		case "EXPOSE":
			d.expose = rest
		case "HEALTHCHECK":
			d.healthcheck = rest
		case "ENTRYPOINT":
			d.entrypoint = rest
		case "CMD":
			d.cmd = rest
		}
	}
	return d
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	readYAML(t, "docker-compose.yml", &c)
	return c
}

// TestContainerSetup checks what can be checked of the container setup
// without a Docker engine: the Dockerfile's final stage, and
// docker-compose.yml against the files it names and the config it mounts,
// which loads with triggerd's own loader in each node's environment.
func TestContainerSetup(t *testing.T) {
	t.Parallel()
	d := readDockerfile(t)
	if d.stages < 2 || d.user == "" || d.user == "root" || d.user == "0" {
		t.Errorf("Dockerfile: %d stages, final USER %q; want a multi-stage build whose image runs without root", d.stages, d.user)
	}
	if d.entrypoint != `["triggerd"]` || d.cmd != `["serve", "--log-format", "json"]` {
		t.Errorf("Dockerfile: ENTRYPOINT %s CMD %s, want triggerd serve", d.entrypoint, d.cmd)
	}
	health := regexp.MustCompile(`http://127\.0\.0\.1:(\d+)/readyz`).FindStringSubmatch(d.healthcheck)
	if health == nil {
		t.Fatalf("Dockerfile: HEALTHCHECK %q does not probe /readyz", d.healthcheck)
	}
	configPath := d.env["TRIGGERD_CONFIG"]

	c := readCompose(t)
	for _, name := range []string{"postgres", "triggerd-1", "triggerd-2", "receiver"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("docker-compose.yml has no service %s", name)
		}
	}
	pg := c.Services["postgres"]
	if !slices.Contains(pg.Command, "wal_level=logical") {
		t.Errorf("postgres runs %v, without wal_level=logical", pg.Command)
	}
	for name, s := range c.Services {
		if s.Build != "" {
			if _, err := os.Stat(filepath.Join(s.Build, "Dockerfile")); err != nil {
				t.Errorf("%s builds %s, which has no Dockerfile: %v", name, s.Build, err)
			}
		}
		for _, v := range s.Volumes {
			host := strings.Split(v, ":")[0]
			if strings.HasPrefix(host, ".") {
				if _, err := os.Stat(host); err != nil {
					t.Errorf("%s mounts %s, which does not exist: %v", name, host, err)
				}
			} else if _, ok := c.Volumes[host]; !ok {
				t.Errorf("%s mounts volume %s, which volumes: does not declare", name, host)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is no service", name, dep)
			}
		}
	}

	recv := c.Services["receiver"]
	listen := recv.Command[slices.Index(recv.Command, "--listen")+1]
	_, recvPort, _ := net.SplitHostPort(listen)
	nodes := 0
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "triggerd-") {
			continue
		}
		nodes++
		if s.mount("./deploy/triggerd.yaml") != configPath {
			t.Errorf("%s mounts deploy/triggerd.yaml at %q, not at TRIGGERD_CONFIG %q", name, s.mount("./deploy/triggerd.yaml"), configPath)
		}
		raw, err := os.ReadFile("deploy/triggerd.yaml")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse("deploy/triggerd.yaml", raw, s.env)
		if err != nil {
			t.Errorf("%s: the config does not load in its environment: %v", name, err)
			continue
		}
		_, port, _ := net.SplitHostPort(cfg.Listen)
		if port != health[1] || port != d.expose {
			t.Errorf("%s listens on %s; HEALTHCHECK probes %s, EXPOSE %s", name, cfg.Listen, health[1], d.expose)
		}
		if len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":"+port) {
			t.Errorf("%s publishes %v, not the config's port %s", name, s.Ports, port)
		}
		if cfg.NodeID != strings.TrimPrefix(name, "triggerd-") && cfg.NodeID != "node-"+strings.TrimPrefix(name, "triggerd-") {
			t.Errorf("%s is node %q", name, cfg.NodeID)
		}
		storeURL, err := url.Parse(cfg.Store.URL)
		if err != nil || storeURL.Hostname() != "postgres" || storeURL.Path != "/"+pg.Environment["POSTGRES_DB"] {
			t.Errorf("%s's store %s is not the postgres service's database", name, cfg.Store.URL)
		}
		if pw, _ := storeURL.User.Password(); pw != pg.Environment["POSTGRES_PASSWORD"] {
			t.Errorf("%s's store password is not the postgres service's", name)
		}
		p := cfg.Projects[0]
		if s.mount("storage") != p.Storage["uploads"].Path {
			t.Errorf("%s mounts the storage volume at %q, the config watches %q", name, s.mount("storage"), p.Storage["uploads"].Path)
		}
		types := map[string]bool{}
		for _, tr := range p.Triggers {
			types[tr.Type] = true
			u, err := url.Parse(tr.URL)
			if err != nil || u.Hostname() != "receiver" || u.Port() != recvPort {
				t.Errorf("%s: trigger %s delivers to %s, not to the receiver service on port %s", name, tr.Name, tr.URL, recvPort)
			}
		}
		for _, want := range []string{"sent-email", "DB_INSERT", "FILE_CREATE", "FILE_DELETE"} {
			if !types[want] {
				t.Errorf("%s: no trigger of type %s: the demo exercises every source", name, want)
			}
		}
	}
	if nodes != 2 {
		t.Errorf("docker-compose.yml runs %d triggerd nodes, want 2 sharing the store", nodes)
	}
}

// TestMonitoringProfile checks docker-compose.yml's monitoring profile
// against the files it mounts: Prometheus scrapes every triggerd node at
// the port its config serves /metrics on, Grafana's data source is that
// Prometheus, and Grafana's dashboard provider reads the folder where
// deploy/grafana/triggerd.json is mounted. Neither starts without
// --profile monitoring.
func TestMonitoringProfile(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	prom, graf := c.Services["prometheus"], c.Services["grafana"]
	for name, s := range map[string]composeService{"prometheus": prom, "grafana": graf} {
		if !slices.Equal(s.Profiles, []string{"monitoring"}) {
			t.Errorf("%s has profiles %v, want [monitoring]: a plain docker compose up starts without it", name, s.Profiles)
		}
	}

	var promConfig struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "deploy/prometheus.yml", &promConfig)
	if prom.mount("./deploy/prometheus.yml") != "/etc/prometheus/prometheus.yml" {
		t.Errorf("prometheus mounts deploy/prometheus.yml at %q, not where Prometheus reads its config", prom.mount("./deploy/prometheus.yml"))
	}
	var targets []string
	for _, sc := range promConfig.ScrapeConfigs {
		if sc.JobName == "triggerd" && (sc.MetricsPath == "" || sc.MetricsPath == "/metrics") {
			for _, st := range sc.StaticConfigs {
				targets = append(targets, st.Targets...)
			}
		}
	}
	raw, err := os.ReadFile("deploy/triggerd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "triggerd-") {
			continue
		}
		cfg, err := config.Parse("deploy/triggerd.yaml", raw, s.env)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		addr := cfg.Listen
		if cfg.MetricsListen != "" {
			addr = cfg.MetricsListen
		}
		_, port, _ := net.SplitHostPort(addr)
		want = append(want, net.JoinHostPort(name, port))
	}
	slices.Sort(targets)
	slices.Sort(want)
	if !slices.Equal(targets, want) {
		t.Errorf("deploy/prometheus.yml's job triggerd scrapes %v; the nodes serve /metrics at %v", targets, want)
	}

	var sources struct {
		Datasources []struct {
			Type, URL string
			UID       string `yaml:"uid"`
		} `yaml:"datasources"`
	}
	readYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yaml", &sources)
	promPort := prom.Ports[0][strings.LastIndex(prom.Ports[0], ":")+1:]
	if len(sources.Datasources) != 1 || sources.Datasources[0].Type != "prometheus" || sources.Datasources[0].URL != "http://prometheus:"+promPort {
		t.Errorf("Grafana's data sources are %+v; want one of type prometheus at http://prometheus:%s", sources.Datasources, promPort)
	}
	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "deploy/grafana/provisioning/dashboards/triggerd.yaml", &providers)
	if graf.mount("./deploy/grafana/provisioning") != "/etc/grafana/provisioning" {
		t.Errorf("grafana mounts deploy/grafana/provisioning at %q, not where Grafana reads provisioning", graf.mount("./deploy/grafana/provisioning"))
	}
	dash := graf.mount("./deploy/grafana/triggerd.json")
	if len(providers.Providers) != 1 || filepath.Dir(dash) != providers.Providers[0].Options.Path {
		t.Errorf("Grafana's dashboard provider reads %+v; the dashboard is mounted at %q", providers.Providers, dash)
	}
}

// readYAML reads the YAML file path into v.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestContainerEntryPoint runs the image's entry point as plain processes:
// two nodes as the Dockerfile starts them (config from TRIGGERD_CONFIG,
// the compose file's environment) and the compose file's receiver, on a
// throwaway database prepared with deploy/initdb; then an event of each
// source reaches the receiver, verified, and /readyz, which HEALTHCHECK
// probes, answers 200.
func TestContainerEntryPoint(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	d := readDockerfile(t)
	db := pgtest.Database(t)
	initSQL, err := os.ReadFile("deploy/initdb/01-demo.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), string(initSQL)); err != nil {
		t.Fatalf("deploy/initdb/01-demo.sql: %v", err)
	}
	storage := t.TempDir()
	configPath, err := filepath.Abs("deploy/triggerd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The containers' environment, with what differs outside them: the
	// database, the folder, the addresses, and the receiver's name.
	recvAddr := nodetest.FreeAddr(t)
	outside := map[string]string{"TRIGGERD_STORE_URL": db, "APP_DATABASE_URL": db, "TRIGGERD_STORAGE": storage,
		"TRIGGERD_LISTEN": "127.0.0.1:0", "DEMO_RECEIVER": "http://" + recvAddr, "TRIGGERD_CONFIG": configPath}
	environ := func(s composeService) []string {
		var env []string
		for k, v := range s.Environment {
			env = append(env, k+"="+v)
		}
		for k, v := range outside {
			env = append(env, k+"="+v)
		}
		return env
	}

	recv := c.Services["receiver"]
	args := slices.Clone(recv.Command)
	args[slices.Index(args, "--listen")+1] = recvAddr
	cmd := nodetest.Command(args...)
	cmd.Env = append(cmd.Env, environ(recv)...)
	printedOut := new(dispatchtest.Buffer)
	cmd.Stdout = printedOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var cmdArgs []string
	if err := yamlList(d.cmd, &cmdArgs); err != nil {
		t.Fatalf("Dockerfile CMD %s: %v", d.cmd, err)
	}
	var addrs []string
	for _, name := range []string{"triggerd-1", "triggerd-2"} {
		node := nodetest.Command(cmdArgs...)
		node.Env = append(node.Env, environ(c.Services[name])...)
		child := nodetest.StartCommand(t, node, name)
		addrs = append(addrs, child.Addr)
	}
	for _, addr := range addrs {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s/readyz: %d", addr, resp.StatusCode)
		}
	}
	waitFor(t, printedOut, `receiver: taking the deliveries of project demo`, 10*time.Second)

	resp, err := http.Post("http://"+addrs[1]+"/v1/api/demo/event-triggers/queue", "application/json",
		strings.NewReader(`{"type":"sent-email","data":{"to":"ada@example.com"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, printedOut, `receiver: sent-email \S+ \(X-SC-Token verified, from node-[12]\)`, 10*time.Second)
	// The row change: captured once a node streams the database.
	if err := waittest.Until(30*time.Second, func() error {
		_, err := conn.Exec(t.Context(), `INSERT INTO signups (email) VALUES ('ada@example.com')`)
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`receiver: DB_INSERT \S+ \(X-SC-Token verified`).MatchString(printedOut.String()) {
			return fmt.Errorf("no DB_INSERT printed yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, printedOut.String())
	}
	if err := os.WriteFile(filepath.Join(storage, "hello.txt"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, printedOut, `receiver: FILE_CREATE \S+ \(X-SC-Token verified`, 15*time.Second)
}

// yamlList reads a Dockerfile's JSON-form list (JSON is YAML).
func yamlList(s string, out *[]string) error {
	return yaml.Unmarshal([]byte(s), out)
}
