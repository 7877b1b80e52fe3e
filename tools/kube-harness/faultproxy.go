package main

// fault-proxy: a reverse proxy on loopback between a client (the operator under test)
// and the API server that injects the faults a real control plane shows under stress,
// chosen by a seeded random source so a failing run can be replayed:
//
//	latency     the request waits 50-800 ms before it is forwarded
//	error500    500 InternalError, nothing forwarded
//	conflict    409 Conflict for a write, nothing forwarded
//	throttle    429 TooManyRequests with Retry-After: 1, nothing forwarded
//	reset       the connection is closed before anything is forwarded
//	lostreply   a write is forwarded and applied, then the connection is closed
//	            before the answer reaches the client (the client cannot know)
//	watchcut    a watch is forwarded and cut after 1-8 s
//	watch410    a watch answers one ERROR event with a 410 Expired Status
//
// The proxy serves plain HTTP (the client's bearer token passes through unchanged, so
// the API server authenticates and authorises the client itself) and speaks TLS to the
// API server, trusting the harness CA. Its own control endpoints, never forwarded:
//
//	GET  /__faults          counts: requests, faults by kind, writes by verb and resource
//	POST /__faults/on       inject faults (the default)
//	POST /__faults/off      forward everything untouched
//	POST /__faults/reset    zero the counts
//
// It prints one JSON line {"url": ...} once listening and stops on SIGTERM or SIGINT.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

type faultProxy struct {
	upstream *url.URL
	proxy    *httputil.ReverseProxy
	rate     float64

	mu       sync.Mutex
	rng      *rand.Rand
	enabled  bool
	requests int
	faults   map[string]int
	writes   map[string]int
}

func faultProxyMain(args []string) int {
	fs := flag.NewFlagSet("fault-proxy", flag.ContinueOnError)
	upstream := fs.String("upstream", "", "the API server URL (https://127.0.0.1:PORT; required)")
	caFile := fs.String("ca", "", "CA certificate file the API server's serving certificate chains to (required)")
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	seed := fs.Uint64("seed", 1, "seed of the random source that picks faults")
	rate := fs.Float64("rate", 0.1, "probability that a request gets a fault (0 to 1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *upstream == "" || *caFile == "" {
		fmt.Fprintln(os.Stderr, "kube-harness fault-proxy: --upstream and --ca are required")
		return 2
	}
	target, err := url.Parse(*upstream)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness fault-proxy: --upstream: %v\n", err)
		return 2
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "kube-harness fault-proxy: --listen must be a loopback IP:PORT, got %q\n", *listen)
		return 2
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness fault-proxy: %v\n", err)
		return 1
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintf(os.Stderr, "kube-harness fault-proxy: no certificate in %s\n", *caFile)
		return 1
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	transport.ForceAttemptHTTP2 = true

	fp := &faultProxy{
		upstream: target,
		rate:     *rate,
		rng:      rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15)),
		enabled:  true,
		faults:   map[string]int{},
		writes:   map[string]int{},
	}
	fp.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport:     transport,
		FlushInterval: -1, // watches stream event by event
		ErrorLog:      nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the fault (or the client) ended it
			}
			writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "fault-proxy: upstream: "+err.Error())
		},
	}

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-harness fault-proxy: %v\n", err)
		return 1
	}
	server := &http.Server{Handler: fp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = server.Serve(listener) }()
	line, _ := json.Marshal(map[string]string{"url": "http://" + listener.Addr().String()})
	fmt.Println(string(line))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = server.Shutdown(ctx)
	return 0
}

// isWatch reports whether r asks for a watch stream.
func isWatch(r *http.Request) bool {
	w := r.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// isWrite reports whether r changes state.
func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// resourceOf names the resource of an API path: /api/v1/namespaces/ns/secrets/x → secrets,
// with /status appended for the status subresource.
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// /api/v1/... or /apis/group/version/...
	rest := parts
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		rest = parts[3:]
	}
	if len(rest) >= 2 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return "namespaces"
	}
	resource := rest[0]
	if len(rest) >= 3 {
		resource += "/" + rest[2]
	}
	return resource
}

// pick decides the fault for one request (empty: none) and counts the request.
func (fp *faultProxy) pick(r *http.Request) (string, time.Duration) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.requests++
	if isWrite(r) && !strings.HasPrefix(resourceOf(r.URL.Path), "leases") {
		fp.writes[r.Method+" "+resourceOf(r.URL.Path)]++
	}
	if !fp.enabled || fp.rng.Float64() >= fp.rate {
		return "", 0
	}
	var kinds []string
	switch {
	case isWatch(r):
		kinds = []string{"latency", "error500", "throttle", "reset", "watchcut", "watchcut", "watch410"}
	case isWrite(r):
		kinds = []string{"latency", "error500", "conflict", "throttle", "reset", "lostreply", "lostreply"}
	default:
		kinds = []string{"latency", "error500", "throttle", "reset"}
	}
	kind := kinds[fp.rng.IntN(len(kinds))]
	fp.faults[kind]++
	var d time.Duration
	switch kind {
	case "latency":
		d = time.Duration(50+fp.rng.IntN(750)) * time.Millisecond
	case "watchcut":
		d = time.Duration(1000+fp.rng.IntN(7000)) * time.Millisecond
	}
	return kind, d
}

func (fp *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/__faults") {
		fp.control(w, r)
		return
	}
	kind, d := fp.pick(r)
	switch kind {
	case "":
		fp.proxy.ServeHTTP(w, r)
	case "latency":
		time.Sleep(d)
		fp.proxy.ServeHTTP(w, r)
	case "error500":
		writeStatus(w, http.StatusInternalServerError, "InternalError", "fault-proxy: injected internal error")
	case "conflict":
		writeStatus(w, http.StatusConflict, "Conflict",
			"fault-proxy: injected conflict: the object has been modified; please apply your changes to the latest version and try again")
	case "throttle":
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusTooManyRequests, "TooManyRequests", "fault-proxy: injected throttling")
	case "reset":
		hangUp(w)
	case "lostreply":
		// Forward and let the API server apply it; the client never hears back.
		recorder := &discardWriter{header: http.Header{}}
		fp.proxy.ServeHTTP(recorder, r)
		hangUp(w)
	case "watchcut":
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		fp.proxy.ServeHTTP(w, r.WithContext(ctx))
		if ctx.Err() != nil {
			hangUp(w)
		}
	case "watch410":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		event := `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",` +
			`"message":"fault-proxy: injected: too old resource version","reason":"Expired","code":410}}` + "\n"
		_, _ = io.WriteString(w, event)
	}
}

func (fp *faultProxy) control(w http.ResponseWriter, r *http.Request) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/__faults":
	case r.Method == http.MethodPost && r.URL.Path == "/__faults/on":
		fp.enabled = true
	case r.Method == http.MethodPost && r.URL.Path == "/__faults/off":
		fp.enabled = false
	case r.Method == http.MethodPost && r.URL.Path == "/__faults/reset":
		fp.requests = 0
		fp.faults = map[string]int{}
		fp.writes = map[string]int{}
	default:
		http.Error(w, "unknown fault-proxy control path", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"enabled":  fp.enabled,
		"requests": fp.requests,
		"faults":   fp.faults,
		"writes":   fp.writes,
	})
}

// hangUp closes the client's connection without an answer, as a reset or a crashed
// load balancer would.
func hangUp(w http.ResponseWriter) {
	if hijacker, ok := w.(http.Hijacker); ok {
		if conn, _, err := hijacker.Hijack(); err == nil {
			if tcp, ok := conn.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0) // RST, not FIN
			}
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // HTTP/2 or already written: abort the stream
}

func writeStatus(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body, _ := json.Marshal(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": message, "reason": reason, "code": code,
	})
	_, _ = w.Write(body)
}

// discardWriter takes a forwarded answer nobody will read.
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
