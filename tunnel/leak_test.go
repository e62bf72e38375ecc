package tunnel

import (
	"runtime"
	"testing"
	"time"
)

// checkGoroutines fails the test if, when it ends, more goroutines run than
// when it started (after giving exiting ones a moment). Call it first so its
// cleanup runs last; do not use it in parallel tests.
func checkGoroutines(t testing.TB) {
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
