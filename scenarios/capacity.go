package scenarios

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// capacity measures how many requests per second the guest's web server
// answers at most: conns clients in a closed loop (each sends its next
// request when the last one answered, on a kept-alive connection, like
// ab -k), for d. It is how an open-loop rate the guest can carry is
// chosen (LoadOptions.Share); a TCG guest serves a few hundred a second
// where the study's KVM guest took thousands.
func capacity(ctx context.Context, env LabEnv, url string, conns int, d time.Duration) (float64, error) {
	tr := &http.Transport{DialContext: env.Dial, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for cctx.Err() == nil {
				req, err := http.NewRequestWithContext(cctx, http.MethodGet, url, nil)
				if err != nil {
					failed.Add(1)
					return
				}
				resp, err := hc.Do(req)
				if err != nil {
					if cctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode/100 == 2 {
					done.Add(1)
				} else if cctx.Err() == nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if done.Load() == 0 {
		return 0, fmt.Errorf("capacity: no request to %s answered in %s (%d failed)", url, d, failed.Load())
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}
