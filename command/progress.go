package command

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/migrate"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressLine renders the progress stream as one rewritten line on a
// terminal, at most ten times a second. Off a terminal it prints nothing:
// scripts use --json.
type progressLine struct {
	mu   sync.Mutex
	w    io.Writer
	on   bool
	last time.Time
	used bool
}

func newProgressLine(w io.Writer, enabled bool) *progressLine {
	return &progressLine{w: w, on: enabled && isTerminal(w)}
}

func (p *progressLine) update(pr migrate.Progress) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	final := pr.Phase == migrate.PhaseCompleted || pr.Phase == migrate.PhaseFailed || pr.Phase == migrate.PhaseCancelled
	if !final && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.used = true
	fmt.Fprintf(p.w, "\r\033[K%s", formatProgress(pr))
}

// done ends the line so later output starts on a fresh one.
func (p *progressLine) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used {
		fmt.Fprintln(p.w)
		p.used = false
	}
}

func formatProgress(pr migrate.Progress) string {
	return fmt.Sprintf("%-10s pass %-3d remaining %9s  sent %9s of %9s  %7.1f Mbit/s  %6.1fs",
		pr.Phase, pr.Pass, humanBytes(pr.RemainingBytes), humanBytes(pr.TransferredBytes),
		humanBytes(pr.TotalBytes), pr.Mbps, pr.Elapsed.Seconds())
}

func humanBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
