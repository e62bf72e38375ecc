package loadgen

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Outcome is how a request ended. It is a byte, to keep Request small; its
// text ("ok", "timeout"...) is what String, JSON and the command print.
type Outcome uint8

// The outcomes; doc.go says what each means. The zero Outcome is none of
// them: a request not yet ended.
const (
	OutcomeOK        Outcome = iota + 1 // 2xx, body read fully
	OutcomeHTTPError                    // non-2xx, body read fully
	OutcomeTimeout                      // no full reply within Timeout
	OutcomeConnError                    // dial failed, reset, EOF, malformed reply
	OutcomeOverload                     // not sent: MaxOutstanding in flight
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"", "ok", "http-error", "timeout", "conn-error", "overload"}

func (o Outcome) String() string {
	if o > 0 && o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// MarshalText makes an Outcome its name in JSON, also as a map key.
func (o Outcome) MarshalText() ([]byte, error) {
	if o == 0 || o >= numOutcomes {
		return nil, fmt.Errorf("loadgen: unknown outcome %d", uint8(o))
	}
	return []byte(outcomeNames[o]), nil
}

// UnmarshalText reads an Outcome's name.
func (o *Outcome) UnmarshalText(b []byte) error {
	for i, n := range outcomeNames {
		if i > 0 && string(b) == n {
			*o = Outcome(i)
			return nil
		}
	}
	return fmt.Errorf("loadgen: unknown outcome %q", b)
}

// Request is the record of one request: 40 bytes, so that a run of minutes
// at thousands of requests per second stays in tens of megabytes.
type Request struct {
	Due     time.Duration // scheduled, from Result.Start
	Sent    time.Duration // started, from Result.Start; for an overload, when it was refused
	Latency time.Duration // from Sent to the last body byte; 0 unless ok or http-error
	Bytes   int64         // body bytes read
	Status  int32         // HTTP status, 0 if no reply header arrived
	Outcome Outcome
}

// Result is every request of a run.
type Result struct {
	Start    time.Time
	Requests []Request // in due order: Requests[i] was due at i/Rate
	// End is the due offset where sending stopped: Config.Duration, or
	// earlier when Run's context was cancelled.
	End time.Duration
}

// Summary describes the requests due in a window.
type Summary struct {
	Requests int             `json:"requests"`
	OK       int             `json:"ok"`
	Errors   map[Outcome]int `json:"errors"` // every outcome but ok that occurred
	// SendRate is the achieved send rate: the requests sent (all but
	// overloads) over the span of their send times, (n-1)/(last-first).
	// A scheduler that falls behind shows here.
	SendRate float64 `json:"send_rate"`
	// ReplyRate is the replies (ok and http-error) per second of the
	// window.
	ReplyRate float64 `json:"reply_rate"`
	// MaxLateMS is how late the latest request was sent, Sent-Due, in
	// milliseconds: the client's own health. A client short of CPU sends
	// late, and then measures itself as much as the server.
	MaxLateMS float64 `json:"max_late_ms"`
	// Latencies of the ok requests, in milliseconds; percentiles are
	// nearest-rank. All 0 when no request was ok.
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Summary describes the requests due in [from, to); to <= 0 means
// r.End.
func (r *Result) Summary(from, to time.Duration) Summary {
	if to <= 0 {
		to = r.End
	}
	s := Summary{Errors: map[Outcome]int{}}
	var lat []time.Duration
	var sent, replies int
	var first, last time.Duration
	for _, q := range r.window(from, to) {
		s.Requests++
		switch q.Outcome {
		case OutcomeOK:
			s.OK++
			lat = append(lat, q.Latency)
		default:
			s.Errors[q.Outcome]++
		}
		if q.Outcome == OutcomeOK || q.Outcome == OutcomeHTTPError {
			replies++
		}
		if q.Outcome != OutcomeOverload {
			if sent == 0 || q.Sent < first {
				first = q.Sent
			}
			last = max(last, q.Sent)
			sent++
			s.MaxLateMS = max(s.MaxLateMS, ms(q.Sent-q.Due))
		}
	}
	if sent > 1 && last > first {
		s.SendRate = float64(sent-1) / (last - first).Seconds()
	}
	if to > from {
		s.ReplyRate = float64(replies) / (to - from).Seconds()
	}
	st := latencyStats(lat)
	s.MeanMS, s.P50MS, s.P90MS, s.P99MS, s.MaxMS = st.mean, st.p50, st.p90, st.p99, st.max
	return s
}

// Bucket is one interval of a run, by due time, for plots.
type Bucket struct {
	Start  time.Duration `json:"start_ns"` // due offset where the interval begins
	OK     int           `json:"ok"`
	Errors int           `json:"errors"` // every outcome but ok
	MeanMS float64       `json:"mean_ms"`
	P99MS  float64       `json:"p99_ms"`
}

// Buckets cuts the run into intervals of due time, from 0 to r.End; the
// latencies are of the ok requests. It returns nil for interval <= 0.
func (r *Result) Buckets(interval time.Duration) []Bucket {
	if interval <= 0 {
		return nil
	}
	end := r.End
	if n := len(r.Requests); n > 0 {
		end = max(end, r.Requests[n-1].Due+1)
	}
	var out []Bucket
	var lat []time.Duration
	i := 0
	for start := time.Duration(0); start < end; start += interval {
		b := Bucket{Start: start}
		lat = lat[:0]
		for ; i < len(r.Requests) && r.Requests[i].Due < start+interval; i++ {
			if q := r.Requests[i]; q.Outcome == OutcomeOK {
				b.OK++
				lat = append(lat, q.Latency)
			} else {
				b.Errors++
			}
		}
		st := latencyStats(lat)
		b.MeanMS, b.P99MS = st.mean, st.p99
		out = append(out, b)
	}
	return out
}

// window is the requests due in [from, to), found by binary search on Due.
func (r *Result) window(from, to time.Duration) []Request {
	cmp := func(q Request, t time.Duration) int {
		if q.Due < t {
			return -1
		}
		return 1
	}
	lo, _ := slices.BinarySearchFunc(r.Requests, from, cmp)
	hi, _ := slices.BinarySearchFunc(r.Requests, to, cmp)
	if hi < lo {
		return nil
	}
	return r.Requests[lo:hi]
}

type stats struct{ mean, p50, p90, p99, max float64 }

// latencyStats sorts lat and returns its statistics in milliseconds.
func latencyStats(lat []time.Duration) stats {
	if len(lat) == 0 {
		return stats{}
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		return ms(lat[min(max(i, 0), len(lat)-1)])
	}
	return stats{
		mean: ms(sum) / float64(len(lat)),
		p50:  rank(0.50), p90: rank(0.90), p99: rank(0.99),
		max: ms(lat[len(lat)-1]),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
