// Package leakcheck fails a test that leaves goroutines behind: every
// goroutine of vmigrate has one owner and one documented exit, and the
// tests of concurrent code hold them to it.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Check fails t if, when it ends, more goroutines run than when it started
// (after giving exiting ones up to five seconds). Call it first in the test
// so its cleanup runs last; it cannot tell tests apart, so not in parallel
// tests.
func Check(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d running, %d at start\n%s", runtime.NumGoroutine(), base, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
