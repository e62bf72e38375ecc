package command

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// policyFlags choose when pre-copy stops.
func policyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "policy", Value: "smart", Usage: "when pre-copy stops: smart (CloudNet: a local minimum of the remaining pages), xen (30 passes, 3x RAM, < 50 pages) or qemu (QEMU's downtime limit)"},
		&cli.IntFlag{Name: "window", Value: 5, Usage: "smart: passes in the local-minimum window"},
		&cli.DurationFlag{Name: "max-time", Usage: "budget: the longest the migration may take"},
		&cli.StringFlag{Name: "max-bytes", Usage: "budget: the most the migration may send (e.g. 2G)"},
		&cli.DurationFlag{Name: "max-downtime", Usage: "budget: refuse a stop-and-copy expected to pause the VM longer than this"},
		&cli.StringFlag{Name: "on-budget", Value: "stop", Usage: "on a time or bytes budget breach: stop (force stop-and-copy) or abort (cancel; the source runs on)"},
	}
}

// buildPolicy reads policyFlags.
func buildPolicy(c *cli.Context) (stopcopy.Policy, error) {
	if c.Int("window") < 2 {
		return nil, withCode(ExitUsage, fmt.Errorf("--window %d: want at least 2", c.Int("window")))
	}
	p, err := stopcopy.Parse(c.String("policy"), c.Int("window"))
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("--policy: %w", err))
	}
	if !c.IsSet("max-time") && !c.IsSet("max-bytes") && !c.IsSet("max-downtime") {
		return p, nil
	}
	b := stopcopy.Budget{Inner: p, MaxTime: c.Duration("max-time"), MaxDowntime: c.Duration("max-downtime")}
	if s := c.String("max-bytes"); s != "" {
		n, err := workload.ParseSize(s) // sizes as --mem takes them
		if err != nil || n <= 0 {
			return nil, withCode(ExitUsage, fmt.Errorf("--max-bytes %q: want a size such as 2G", s))
		}
		b.MaxBytes = n
	}
	switch c.String("on-budget") {
	case "stop":
		b.OnBreach = stopcopy.StopAndCopy
	case "abort":
		b.OnBreach = stopcopy.Abort
	default:
		return nil, withCode(ExitUsage, fmt.Errorf("--on-budget %q: want stop or abort", c.String("on-budget")))
	}
	if b.MaxTime < 0 || b.MaxDowntime < 0 {
		return nil, withCode(ExitUsage, fmt.Errorf("budget durations must be positive"))
	}
	return b, nil
}
