package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/loadgen"
)

func loadgenCommand() *cli.Command {
	return &cli.Command{
		Name:  "loadgen",
		Usage: "load a web server with GETs at a fixed rate, open loop like httperf, and summarize the replies",
		Description: `Request i is sent at i/rate seconds from the start whether or not earlier
requests were answered; one not answered within --timeout is a timeout. With
--new-conn every request opens a TCP connection of its own (httperf's default);
otherwise up to --conns connections are kept alive. Prints the number of
requests, ok and by error, the achieved send and reply rates and the latencies
of the ok requests. Exits 0 whatever the server answered, 3 if interrupted
(after printing the summary of the requests due until then).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Required: true, Usage: "http://HOST[:PORT]/PATH to GET"},
			&cli.Float64Flag{Name: "rate", Required: true, Usage: "requests per second"},
			&cli.DurationFlag{Name: "duration", Required: true, Usage: "how long to send, e.g. 30s"},
			&cli.DurationFlag{Name: "timeout", Value: loadgen.DefaultTimeout, Usage: "the longest a request may take, connecting included"},
			&cli.IntFlag{Name: "conns", Value: loadgen.DefaultConns, Usage: "keep-alive connections at most (without --new-conn)"},
			&cli.BoolFlag{Name: "new-conn", Usage: "a new TCP connection for every request"},
			&cli.BoolFlag{Name: "json", Usage: "print the summary as JSON"},
		},
		Action: loadgenAction,
	}
}

// loadgenFlags names the flag that sets each loadgen.Config field.
var loadgenFlags = map[string]string{"URL": "url", "Rate": "rate", "Duration": "duration", "Timeout": "timeout", "Conns": "conns"}

func loadgenAction(c *cli.Context) error {
	e := getEnv(c)
	cfg := loadgen.Config{
		URL:               c.String("url"),
		Rate:              c.Float64("rate"),
		Duration:          c.Duration("duration"),
		Timeout:           c.Duration("timeout"),
		Conns:             c.Int("conns"),
		NewConnPerRequest: c.Bool("new-conn"),
	}
	// To loadgen 0 means the default; here it is a mistake.
	if cfg.Timeout <= 0 {
		return withCode(ExitUsage, fmt.Errorf("--timeout: %v: want > 0", cfg.Timeout))
	}
	if cfg.Conns <= 0 {
		return withCode(ExitUsage, fmt.Errorf("--conns: %d: want > 0", cfg.Conns))
	}
	res, err := loadgen.Run(e.ctx, cfg)
	var ce *loadgen.ConfigError
	if errors.As(err, &ce) {
		if f, ok := loadgenFlags[ce.Field]; ok {
			return withCode(ExitUsage, fmt.Errorf("--%s: %s", f, ce.Reason))
		}
		return withCode(ExitUsage, err)
	}
	if res == nil {
		return err
	}
	s := res.Summary(0, 0)
	if c.Bool("json") {
		if werr := writeJSON(e.stdout, s); werr != nil {
			return werr
		}
	} else {
		printLoadSummary(e.stdout, cfg, res.End, s)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return withCode(ExitCancelled, fmt.Errorf("loadgen: interrupted after %v of %v: %w", res.End, cfg.Duration, err))
	}
	return err
}

// printLoadSummary prints s, of a run of cfg that sent until end.
func printLoadSummary(w io.Writer, cfg loadgen.Config, end time.Duration, s loadgen.Summary) {
	conns := fmt.Sprintf("up to %d keep-alive connections", cfg.Conns)
	if cfg.NewConnPerRequest {
		conns = "a new connection per request"
	}
	fmt.Fprintf(w, "loadgen %s: %g req/s for %v, %s\n", cfg.URL, cfg.Rate, end, conns)
	var errs []string
	for _, o := range []loadgen.Outcome{loadgen.OutcomeHTTPError, loadgen.OutcomeTimeout, loadgen.OutcomeConnError, loadgen.OutcomeOverload} {
		if n := s.Errors[o]; n > 0 {
			errs = append(errs, fmt.Sprintf("%d %s", n, o))
		}
	}
	if len(errs) == 0 {
		errs = []string{"no errors"}
	}
	fmt.Fprintf(w, "requests  %d: %d ok, %s\n", s.Requests, s.OK, strings.Join(errs, ", "))
	fmt.Fprintf(w, "rates     sent %.1f req/s (at most %.1f ms late), replies %.1f/s\n", s.SendRate, s.MaxLateMS, s.ReplyRate)
	fmt.Fprintf(w, "latency   mean %.2f ms, p50 %.2f, p90 %.2f, p99 %.2f, max %.2f (ok requests)\n", s.MeanMS, s.P50MS, s.P90MS, s.P99MS, s.MaxMS)
}
