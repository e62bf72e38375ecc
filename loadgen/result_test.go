package loadgen

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
	"unsafe"
)

const ms1 = time.Millisecond

// handRun is a run at 10 req/s for 1 s: requests due every 100 ms, sent on
// time except the fifth (20 ms late), with latencies 10, 20, ... ms, and
// four that failed.
func handRun() *Result {
	r := &Result{End: time.Second}
	for i := range 10 {
		due := time.Duration(i) * 100 * ms1
		r.Requests = append(r.Requests, Request{Due: due, Sent: due, Latency: time.Duration(i+1) * 10 * ms1,
			Outcome: OutcomeOK, Status: 200, Bytes: 2048})
	}
	r.Requests[4].Sent += 20 * ms1
	r.Requests[2] = Request{Due: 200 * ms1, Sent: 200 * ms1, Outcome: OutcomeTimeout}
	r.Requests[3] = Request{Due: 300 * ms1, Sent: 300 * ms1, Outcome: OutcomeHTTPError, Status: 503, Latency: 5 * ms1}
	r.Requests[6] = Request{Due: 600 * ms1, Sent: 600 * ms1, Outcome: OutcomeConnError}
	r.Requests[9] = Request{Due: 900 * ms1, Sent: 900 * ms1, Outcome: OutcomeOverload}
	return r
}

func TestSummary(t *testing.T) {
	r := handRun()
	// ok latencies: 10 20 50 60 80 90 ms.
	tests := []struct {
		name     string
		from, to time.Duration
		want     Summary
	}{
		{"whole run", 0, 0, Summary{
			Requests: 10, OK: 6,
			Errors:   map[Outcome]int{OutcomeTimeout: 1, OutcomeHTTPError: 1, OutcomeConnError: 1, OutcomeOverload: 1},
			SendRate: 8 / 0.8, ReplyRate: 7, // 9 sent over 0..800 ms; 7 replies in 1 s
			MaxLateMS: 20,
			MeanMS:    310.0 / 6, P50MS: 50, P90MS: 90, P99MS: 90, MaxMS: 90,
		}},
		{"a window", 250 * ms1, 650 * ms1, Summary{
			Requests: 4, OK: 2, // due 300 400 500 600
			Errors:   map[Outcome]int{OutcomeHTTPError: 1, OutcomeConnError: 1},
			SendRate: 3 / 0.3, ReplyRate: 3 / 0.4, MaxLateMS: 20,
			MeanMS: 55, P50MS: 50, P90MS: 60, P99MS: 60, MaxMS: 60,
		}},
		{"only failures", 200 * ms1, 300 * ms1, Summary{
			Requests: 1, Errors: map[Outcome]int{OutcomeTimeout: 1},
		}},
		{"empty window", 2 * time.Second, 3 * time.Second, Summary{Errors: map[Outcome]int{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Summary(tt.from, tt.to)
			if !summariesEqual(got, tt.want) {
				t.Errorf("Summary(%v, %v) =\n%+v\nwant\n%+v", tt.from, tt.to, got, tt.want)
			}
		})
	}
}

func summariesEqual(a, b Summary) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	if len(a.Errors) == 0 && len(b.Errors) == 0 {
		a.Errors, b.Errors = nil, nil
	}
	return a.Requests == b.Requests && a.OK == b.OK && reflect.DeepEqual(a.Errors, b.Errors) &&
		near(a.SendRate, b.SendRate) && near(a.ReplyRate, b.ReplyRate) && near(a.MaxLateMS, b.MaxLateMS) && near(a.MeanMS, b.MeanMS) &&
		near(a.P50MS, b.P50MS) && near(a.P90MS, b.P90MS) && near(a.P99MS, b.P99MS) && near(a.MaxMS, b.MaxMS)
}

// Percentiles are nearest-rank: the smallest latency with at least p of
// them at or below it.
func TestPercentiles(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		lat = append(lat, time.Duration(i)*ms1)
	}
	st := latencyStats(lat)
	if st.p50 != 50 || st.p90 != 90 || st.p99 != 99 || st.max != 100 || st.mean != 50.5 {
		t.Errorf("1..100 ms: %+v", st)
	}
	if st := latencyStats([]time.Duration{7 * ms1}); st != (stats{7, 7, 7, 7, 7}) {
		t.Errorf("one latency: %+v", st)
	}
	if st := latencyStats(nil); st != (stats{}) {
		t.Errorf("none: %+v", st)
	}
}

func TestBuckets(t *testing.T) {
	r := handRun()
	got := r.Buckets(250 * ms1)
	want := []Bucket{
		{Start: 0, OK: 2, Errors: 1, MeanMS: 15, P99MS: 20},         // due 0, 100, 200 (timeout)
		{Start: 250 * ms1, OK: 1, Errors: 1, MeanMS: 50, P99MS: 50}, // 300 (503), 400
		{Start: 500 * ms1, OK: 2, Errors: 1, MeanMS: 70, P99MS: 80}, // 500, 600 (conn-error), 700
		{Start: 750 * ms1, OK: 1, Errors: 1, MeanMS: 90, P99MS: 90}, // 800, 900 (overload)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Buckets(250ms) =\n%+v\nwant\n%+v", got, want)
	}
	if b := r.Buckets(0); b != nil {
		t.Errorf("Buckets(0) = %v, want nil", b)
	}
	if b := (&Result{End: time.Second}).Buckets(500 * ms1); len(b) != 2 || b[1] != (Bucket{Start: 500 * ms1}) {
		t.Errorf("Buckets of a run with no requests = %+v, want two empty", b)
	}
}

func TestRequestCount(t *testing.T) {
	tests := []struct {
		rate float64
		d    time.Duration
		want int
	}{
		{1000, 2 * time.Second, 2000},
		{3000, 3 * time.Second, 9000},
		{3, time.Second, 3},                   // 0, 333, 667 ms
		{3, time.Second + time.Nanosecond, 4}, // and 1 s
		{0.5, time.Second, 1},                 // 0 only
		{0.5, 3 * time.Second, 2},             // 0 and 2 s
		{1e9, time.Microsecond, 1000},
	}
	for _, tt := range tests {
		n := requestCount(tt.rate, tt.d)
		if n != tt.want {
			t.Errorf("requestCount(%v, %v) = %d, want %d", tt.rate, tt.d, n, tt.want)
		}
		if n > 0 && dueAt(n-1, tt.rate) >= tt.d || dueAt(n, tt.rate) < tt.d {
			t.Errorf("requestCount(%v, %v) = %d: last due %v, next %v", tt.rate, tt.d, n, dueAt(n-1, tt.rate), dueAt(n, tt.rate))
		}
	}
}

// A run of minutes at thousands of requests a second is recorded in tens
// of megabytes: 40 bytes a request.
func TestRequestSize(t *testing.T) {
	if s := unsafe.Sizeof(Request{}); s > 40 {
		t.Errorf("Request is %d bytes, want at most 40", s)
	}
}

// Outcomes are names in JSON, also as map keys, and read back.
func TestOutcomeText(t *testing.T) {
	s := Summary{Requests: 3, OK: 1, Errors: map[Outcome]int{OutcomeTimeout: 1, OutcomeOverload: 1}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ Errors map[string]int }
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Errors, map[string]int{"timeout": 1, "overload": 1}) {
		t.Errorf("errors in JSON: %s", b)
	}
	var s2 Summary
	if err := json.Unmarshal(b, &s2); err != nil || !reflect.DeepEqual(s2.Errors, s.Errors) {
		t.Errorf("read back %+v, %v", s2.Errors, err)
	}
	for o := OutcomeOK; o < numOutcomes; o++ {
		var back Outcome
		if err := back.UnmarshalText([]byte(o.String())); err != nil || back != o {
			t.Errorf("%v read back as %v, %v", o, back, err)
		}
	}
	if _, err := Outcome(0).MarshalText(); err == nil {
		t.Error("the zero Outcome marshalled")
	}
	if err := new(Outcome).UnmarshalText([]byte("fine")); err == nil {
		t.Error(`"fine" read as an outcome`)
	}
}
