package plots_test

import (
	"log"

	"github.com/vmigrate/vmigrate/internal/plots"
)

// A web VM's throughput while it migrates, with the phases shaded.
func ExampleTimePlot() {
	t := []float64{0, 10, 20, 30, 40, 41, 42, 50, 60}
	rps := []float64{800, 790, 650, 640, 660, 0, 770, 800, 805}
	p := plots.TimePlot{
		Title:  "TPC-W under migration",
		XLabel: "time (s)",
		YLabel: "requests/s",
		Series: []plots.Series{{Name: "throughput", X: t, Y: rps}},
		Spans: []plots.Span{
			{From: 12, To: 40.5, Label: "pre-copy"},
			{From: 40.5, To: 41.5, Label: "stop-and-copy"},
		},
	}
	if err := p.Save("throughput.png"); err != nil {
		log.Fatal(err)
	}
}

// Our downtimes beside the paper's, with the spread over repeated runs.
func ExampleBars() {
	b := plots.Bars{
		Title:      "Downtime",
		YLabel:     "downtime (s)",
		Categories: []string{"512 MiB", "1 GiB", "TPC-W"},
		Series: []plots.BarSeries{
			{Name: "default", Values: []float64{1.2, 2.3, 3.1}, Low: []float64{1.0, 2.0, 2.5}, High: []float64{1.5, 2.6, 3.3}},
			{Name: "optimised", Values: []float64{0.5, 0.9, 1.1}, Low: []float64{0.4, 0.8, 1.0}, High: []float64{0.6, 1.0, 1.4}},
			{Name: "paper default", Values: []float64{1.1, 2.0, 3.0}},
			{Name: "paper CloudNet", Values: []float64{0.4, 0.8, 1.0}},
		},
	}
	if err := b.Save("downtime.png"); err != nil {
		log.Fatal(err)
	}
}
