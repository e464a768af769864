// The benchmark suite's Go client: net/http's Transport as the "physical limit" next to the
// Python workers (benchmarks/run_all.py builds it once per run; stdlib only, no modules).
//
// It measures as bench_http1.py's workers do: a warm-up in which every goroutine opens its
// connection and sends a few requests, then -requests GETs spread over -concurrency goroutines,
// the clock running from the moment all are ready to the end of the last request. Neither phase
// starts a request after -max-seconds, and the requests still in flight at twice that are
// abandoned (their context cancelled). Every response is checked (status 200, the protocol, the
// body: "hello world!" or -body-length bytes); the first failure ends the process with exit
// status 1 and the error on stderr. It prints one JSON line: {"rps": ..., "requests": ..., ...}.
//
// HTTP/2 (-http2): net/http's Transport speaks h2 over TLS by ALPN when ForceAttemptHTTP2 is
// set, which a custom TLSClientConfig (trusting -ca-file) otherwise turns off.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

var expectedBody = []byte("hello world!")

type bench struct {
	client     *http.Client
	url        string
	protoMajor int
	bodyLength int // -1: compare with expectedBody
}

// one sends a GET and reads the body into buf (reused: no growth after the first response).
func (b *bench) one(ctx context.Context, buf *bytes.Buffer) error {
	req, err := http.NewRequestWithContext(ctx, "GET", b.url, nil)
	if err != nil {
		return err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("unexpected status %d", resp.StatusCode)
	}
	if resp.ProtoMajor != b.protoMajor {
		return fmt.Errorf("expected HTTP/%d, got %s", b.protoMajor, resp.Proto)
	}
	body := buf.Bytes()
	if b.bodyLength < 0 && !bytes.Equal(body, expectedBody) {
		if len(body) > 50 {
			body = body[:50]
		}
		return fmt.Errorf("unexpected body of %d bytes: %q", buf.Len(), body)
	}
	if b.bodyLength >= 0 && len(body) != b.bodyLength {
		return fmt.Errorf("unexpected body length %d", len(body))
	}
	return nil
}

// phase runs loop on c goroutines; the clock starts when all of them are ready. loop gets the
// phase's deadline (start + capDuration: it starts no request after it) and a context that is
// cancelled 2*capDuration after the start, aborting the requests still in flight, as the
// Python harness cancels its tasks. It returns the time from the start to the end of the last
// loop.
func phase(c int, capDuration time.Duration, loop func(ctx context.Context, deadline time.Time)) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready, finished sync.WaitGroup
	start := make(chan struct{})
	var deadline time.Time // written before start is closed, read after
	ready.Add(c)
	finished.Add(c)
	for i := 0; i < c; i++ {
		go func() {
			defer finished.Done()
			ready.Done()
			<-start
			loop(ctx, deadline)
		}()
	}
	ready.Wait()
	began := time.Now()
	deadline = began.Add(capDuration)
	close(start)
	allDone := make(chan struct{})
	go func() {
		finished.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
	case <-time.After(2 * capDuration):
		cancel()
		<-allDone
	}
	return time.Since(began)
}

type failure struct {
	once sync.Once
	err  error
}

func (f *failure) set(err error) { f.once.Do(func() { f.err = err }) }

func main() {
	url := flag.String("url", "", "the URL to GET")
	concurrency := flag.Int("concurrency", 1, "goroutines (and connections over HTTP/1.1)")
	requests := flag.Int("requests", 1000, "timed requests")
	maxSeconds := flag.Float64("max-seconds", 3, "start no request after this long in a phase")
	caFile := flag.String("ca-file", "", "PEM CA certificates trusted for https")
	bodyLength := flag.Int("body-length", -1, "check the body's length instead of its bytes")
	http2 := flag.Bool("http2", false, "expect HTTP/2 (over TLS, by ALPN)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "error: -url is required")
		os.Exit(2)
	}
	c := *concurrency
	capDuration := time.Duration(*maxSeconds * float64(time.Second))

	transport := &http.Transport{
		// Keep every connection (MaxIdleConns 0: no overall limit), as the Python clients do.
		MaxIdleConnsPerHost: c,
		ForceAttemptHTTP2:   *http2,
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "error: no certificate in", *caFile)
			os.Exit(1)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	b := &bench{
		client:     &http.Client{Transport: transport},
		url:        *url,
		protoMajor: 1,
		bodyLength: *bodyLength,
	}
	if *http2 {
		b.protoMajor = 2
	}
	fail := &failure{}

	// Warm-up: every goroutine opens its connection and sends a few requests.
	warmLeft := int64(*requests / 10)
	if warmLeft > 200 {
		warmLeft = 200
	}
	if warmLeft < int64(2*c) {
		warmLeft = int64(2 * c)
	}
	phase(c, capDuration, func(ctx context.Context, deadline time.Time) {
		var buf bytes.Buffer
		for atomic.AddInt64(&warmLeft, -1) >= 0 && time.Now().Before(deadline) {
			if err := b.one(ctx, &buf); err != nil {
				if ctx.Err() == nil { // not the phase's cancel
					fail.set(err)
				}
				return
			}
		}
	})
	exitOn(fail)

	left := int64(*requests)
	var done int64
	elapsed := phase(c, capDuration, func(ctx context.Context, deadline time.Time) {
		var buf bytes.Buffer
		for atomic.AddInt64(&left, -1) >= 0 && time.Now().Before(deadline) {
			if err := b.one(ctx, &buf); err != nil {
				if ctx.Err() == nil {
					fail.set(err)
				}
				return
			}
			atomic.AddInt64(&done, 1)
		}
	}).Seconds()
	exitOn(fail)

	out, _ := json.Marshal(map[string]any{
		"rps":        float64(done) / elapsed,
		"requests":   done,
		"seconds":    elapsed,
		"capped":     done < int64(*requests),
		"go":         runtime.Version(),
		"gomaxprocs": runtime.GOMAXPROCS(0),
	})
	fmt.Println(string(out))
}

func exitOn(f *failure) {
	if f.err != nil {
		fmt.Fprintln(os.Stderr, "error:", f.err)
		os.Exit(1)
	}
}
