// Package loadgen is vmigrate's open-loop HTTP load generator. It loads a
// web-serving VM before, during and after a live migration and records
// every request, so that what clients saw can be cut into windows (the
// seconds around the switch-over) and plotted.
//
// # Open loop
//
// Requests go out on a fixed schedule whether or not earlier ones have been
// answered: at rate R, request i is due at start + i/R. One goroutine, the
// scheduler, sleeps on a timer until each due time (when it wakes late it
// sends at once, and each request records when it was really sent) and
// starts one goroutine per request. A request that has no answer Timeout
// after it was sent is given up. At most MaxOutstanding requests are in
// flight; a request due while that many are is not sent at all and counts
// as an overload, the client's own limit (httperf's fd-unavail).
//
//	due   ─┬───┬───┬───┬───┬───┬───┬───┬───▶  one request every 1/R
//	       ✓   ✓   ✓   ·   ·   ·   ✓   ✓      · = no answer yet (VM paused)
//	                   └ answered after the pause, or timeout ┘
//
// This is what clients of a real service do: they arrive whatever state the
// server is in. A closed-loop client such as ab instead keeps N requests
// outstanding and sends the next only when one is answered, so a server that
// pauses for 300 ms also pauses the client: the requests that would have
// arrived meanwhile are never sent, the latency they would have suffered is
// never measured (coordinated omission), and the send rate falls with the
// server's speed. An open-loop generator keeps the offered load constant, so
// a migration's pause shows up as timeouts, errors and long latencies of the
// requests due during it.
//
// # Outcomes
//
// Every request ends with one Outcome:
//
//   - ok: a 2xx reply whose body was read to the end;
//   - http-error: any other status (redirects are not followed), body read;
//   - timeout: no full reply within Timeout of being sent;
//   - conn-error: the dial failed or the connection was reset or closed
//     early (refused, reset, EOF, a malformed reply);
//   - overload: not sent, MaxOutstanding requests were in flight.
//
// Latency runs from Sent, when the request's goroutine starts on it, to the
// last byte of the body: it includes dialing when NewConnPerRequest is set
// or no idle connection is free. Sent-Due is the client's own lateness,
// which Summary reports as MaxLateMS.
//
// # Connections
//
// With NewConnPerRequest every request opens a fresh TCP connection, like
// httperf with --num-calls 1 (its default), so each request's SYN meets
// whichever host holds the VM's address at that moment. Otherwise up to
// Conns keep-alive connections are shared (net/http's Transport); a request
// that finds all of them busy waits for one, and the wait is part of its
// latency and its timeout. A request sent on a kept-alive connection that
// the server had closed is retried on a new one by the Transport, within
// the same timeout. Each dial is bounded by Timeout too: net/http lets a
// dial outlive the request that started it, and a dial whose SYN was lost
// while the VM was paused would hold a connection slot through TCP's SYN
// back-off (up to two minutes); with all Conns slots held so, no request
// would get through after the VM answered again.
//
// # Accuracy
//
// go test -run 'TestAgainstHttperf|TestAgainstAb' -v ./loadgen loads one
// server with loadgen and with httperf (3000 req/s, a connection per
// request) and ab (one request at a time), and checks that they agree on
// the request rate and the mean latency within 10%; it logs the figures.
package loadgen
