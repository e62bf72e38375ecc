// Package plots draws the PNG figures of vmigrate's reproduction reports.
//
// A report compares what a live-migration run measured with what a paper
// published: time series of a web VM's throughput and latency while it
// migrates under HTTP load, with the migration phases shaded behind the
// lines, and grouped bars that set our totals (downtime, bytes sent,
// migration time) beside the paper's, as in CloudNet's table.
//
// Each figure is a plain value (TimePlot, Bars) whose Save method validates
// the data and writes a PNG. Nothing here knows about migrations: callers
// turn their measurements into Series, Spans and BarSeries. Save is all or
// nothing: invalid data (mismatched lengths, no data, NaN or infinite values)
// returns an error wrapping ErrInvalid and writes no file, and the PNG is
// written to a temporary file beside path and renamed into place, so a failed
// save never leaves a partial image.
//
// Text is set in the Liberation fonts that gonum.org/v1/plot embeds, so
// rendering needs no fonts installed on the machine.
//
//	p := plots.TimePlot{
//		Title:  "TPC-W under migration",
//		XLabel: "time (s)",
//		YLabel: "requests/s",
//		Series: []plots.Series{{Name: "throughput", X: t, Y: rps}},
//		Spans: []plots.Span{
//			{From: 10, To: 42, Label: "pre-copy"},
//			{From: 42, To: 42.3, Label: "stop-and-copy"},
//		},
//	}
//	if err := p.Save("throughput.png"); err != nil {
//		return fmt.Errorf("report figure: %w", err)
//	}
package plots
