package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// ready is the one JSON line `up` prints on stdout once the API server is ready.
type ready struct {
	Kubeconfig string `json:"kubeconfig"`
	Server     string `json:"server"`
	CAFile     string `json:"caFile"`
	Dir        string `json:"dir"`
	PID        int    `json:"pid"`
}

func up(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "private directory for certificates, kubeconfigs and logs (created; required)")
	etcdDir := fs.String("etcd-dir", "", "etcd data directory (default DIR/etcd)")
	controllers := fs.String("controllers", "garbage-collector-controller,namespace-controller,serviceaccount-controller",
		"kube-controller-manager controllers to run (empty: none)")
	timeout := fs.Duration("ready-timeout", 3*time.Minute, "how long to wait for /readyz")
	removeDir := fs.Bool("remove-dir-on-exit", false, "remove DIR when stopping (the caller made it for us alone)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *removeDir {
		// os.RemoveAll removes symbolic links themselves and never follows them out of DIR.
		defer os.RemoveAll(*dir)
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "kube-harness up: --dir is required")
		return 2
	}
	if *etcdDir == "" {
		*etcdDir = filepath.Join(*dir, "etcd")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness up: %v\n", err)
		return 1
	}
	cp, err := start(*dir, *etcdDir, *controllers, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness up: %v\n", err)
		if cp != nil {
			cp.stop()
		}
		return 1
	}
	line, _ := json.Marshal(ready{
		Kubeconfig: filepath.Join(*dir, "admin.kubeconfig"),
		Server:     cp.server,
		CAFile:     filepath.Join(*dir, "ca.crt"),
		Dir:        *dir,
		PID:        os.Getpid(),
	})
	fmt.Println(string(line))

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	stdinClosed := make(chan struct{})
	go func() {
		// The test process holds our stdin: EOF means it is gone, so we go too.
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	for {
		select {
		case s := <-signals:
			if s == syscall.SIGHUP {
				// Restart the API server on the same port and data: the "API server restarted
				// under load" fault. etcd keeps running, as a real control plane's would.
				fmt.Fprintln(os.Stderr, "kube-harness: restarting kube-apiserver")
				if err := cp.restartAPIServer(*timeout); err != nil {
					fmt.Fprintf(os.Stderr, "kube-harness: restart failed: %v\n", err)
					cp.stop()
					return 1
				}
				fmt.Fprintln(os.Stderr, "kube-harness: kube-apiserver ready again")
				continue
			}
			cp.stop()
			return 0
		case <-stdinClosed:
			cp.stop()
			return 0
		case name := <-cp.died:
			fmt.Fprintf(os.Stderr, "kube-harness: %s exited; see %s\n", name, filepath.Join(*dir, name+".log"))
			cp.stop()
			return 1
		}
	}
}

// controlPlane is what `up` runs: etcd in this process, the other components as children.
type controlPlane struct {
	dir        string
	etcd       *embed.Etcd
	etcdURL    string
	port       int
	server     string
	apiArgs    []string
	mu         sync.Mutex
	children   map[string]*child
	stopping   map[string]bool
	died       chan string
	httpClient *http.Client
}

func start(dir, etcdDir, controllers string, timeout time.Duration) (*controlPlane, error) {
	pki, err := writePKI(dir)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	cp := &controlPlane{
		dir:      dir,
		children: map[string]*child{},
		stopping: map[string]bool{},
		died:     make(chan string, 4),
	}
	if err := cp.startEtcd(etcdDir); err != nil {
		return cp, fmt.Errorf("etcd: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	cp.httpClient = &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pki.admin}}},
	}

	// A free port can be taken between our probe and the API server's bind: try a few.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		cp.port, err = freePort()
		if err != nil {
			return cp, err
		}
		cp.server = "https://127.0.0.1:" + strconv.Itoa(cp.port)
		cp.apiArgs = apiServerArgs(dir, cp.etcdURL, cp.port)
		if err := cp.spawn("kube-apiserver", cp.apiArgs); err != nil {
			return cp, err
		}
		if lastErr = cp.waitReady(timeout); lastErr == nil {
			break
		}
		cp.stopChild("kube-apiserver")
		select { // a failed attempt is not a death to report later
		case <-cp.died:
		default:
		}
	}
	if lastErr != nil {
		return cp, fmt.Errorf("kube-apiserver: %w (log: %s)", lastErr, filepath.Join(dir, "kube-apiserver.log"))
	}
	if err := writeKubeconfig(filepath.Join(dir, "admin.kubeconfig"), cp.server, pki); err != nil {
		return cp, err
	}
	if controllers != "" {
		if err := cp.spawn("kube-controller-manager", []string{
			"--kubeconfig=" + filepath.Join(dir, "admin.kubeconfig"),
			"--controllers=" + controllers,
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--v=1",
		}); err != nil {
			return cp, err
		}
	}
	return cp, nil
}

func apiServerArgs(dir, etcdURL string, port int) []string {
	p := func(name string) string { return filepath.Join(dir, name) }
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p("serving.crt"),
		"--tls-private-key-file=" + p("serving.key"),
		"--client-ca-file=" + p("ca.crt"),
		"--cert-dir=" + p("apiserver-certs"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-account-key-file=" + p("sa.key"),
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		// The ServiceAccount admission plugin wants a default ServiceAccount in every namespace
		// before a Pod is admitted; keyward's tests create no Pods.
		"--disable-admission-plugins=ServiceAccount",
		// Otherwise the loopback address is written into the kubernetes Endpoints object.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--v=1",
	}
}

func (cp *controlPlane) startEtcd(dataDir string) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		clientPort, err := freePort()
		if err != nil {
			return err
		}
		peerPort, err := freePort()
		if err != nil {
			return err
		}
		cfg := embed.NewConfig()
		cfg.Name = "keyward-test"
		cfg.Dir = dataDir
		clientURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
		peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		// Tests never need durability across a power cut, and fsync is most of etcd's latency.
		cfg.UnsafeNoFsync = true
		cfg.LogLevel = "warn"
		cfg.LogOutputs = []string{filepath.Join(cp.dir, "etcd.log")}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			cp.etcd = e
			cp.etcdURL = clientURL.String()
			return nil
		case <-time.After(60 * time.Second):
			e.Close()
			lastErr = errors.New("not ready after 60s")
		}
	}
	return lastErr
}

// child is one component process; done closes when it has exited.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// spawn runs this binary again as one component, its output in DIR/NAME.log. The child
// reads our pipe on its stdin and exits when it closes, and has a parent-death signal too.
func (cp *controlPlane) spawn(name string, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(cp.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	cp.mu.Lock()
	cp.children[name] = c
	delete(cp.stopping, name)
	cp.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(c.done)
		_ = stdin.Close()
		_ = logFile.Close()
		cp.mu.Lock()
		expected := cp.stopping[name]
		cp.mu.Unlock()
		if !expected {
			cp.died <- name
		}
	}()
	return nil
}

func (cp *controlPlane) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		cp.mu.Lock()
		c := cp.children["kube-apiserver"]
		cp.mu.Unlock()
		if c == nil {
			return errors.New("not running")
		}
		select {
		case <-c.done:
			return errors.New("exited before it was ready")
		default:
		}
		resp, err := cp.httpClient.Get(cp.server + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("/readyz %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-c.done:
			return errors.New("exited before it was ready")
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s: %s", timeout, last)
}

func (cp *controlPlane) restartAPIServer(timeout time.Duration) error {
	cp.stopChild("kube-apiserver")
	if err := cp.spawn("kube-apiserver", cp.apiArgs); err != nil {
		return err
	}
	return cp.waitReady(timeout)
}

// stopChild sends SIGTERM, waits up to 15 s, then kills the whole process group.
func (cp *controlPlane) stopChild(name string) {
	cp.mu.Lock()
	c := cp.children[name]
	cp.stopping[name] = true
	delete(cp.children, name)
	cp.mu.Unlock()
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func (cp *controlPlane) stop() {
	cp.stopChild("kube-controller-manager")
	cp.stopChild("kube-apiserver")
	if cp.etcd != nil {
		cp.etcd.Close()
	}
}

// childEnv marks a component process that `up` started.
const childEnv = "KUBE_HARNESS_CHILD"

// exitWithParent makes a component child exit when `up` is gone: its stdin is up's pipe.
// Run by hand (without childEnv) a component keeps the upstream behaviour.
func exitWithParent() {
	if os.Getenv(childEnv) == "" {
		return
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(1)
	}()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
