package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmigrate/vmigrate/internal/plots"
)

// The reproductions' reports: JSON of every run and the rows, a markdown
// table, and PNG plots beside them in the same directory.

// phaseSpans are a run's migration phases on the load clock, for shading.
func phaseSpans(r LoadRecord) []plots.Span {
	sw := min(max(r.SwitchoverS, r.MigStartS), r.MigEndS)
	end := max(r.MigEndS, sw)
	return []plots.Span{
		{From: r.MigStartS, To: sw, Label: "pre-copy"},
		{From: sw, To: end, Label: "stop-and-copy to running"},
	}
}

// responsePlot is a run's response time over time: the mean and the p99
// of each quarter second's answered requests.
func responsePlot(title string, r LoadRecord) plots.TimePlot {
	var mean, p99 plots.Series
	mean.Name, p99.Name = "mean", "p99"
	for _, b := range r.Buckets {
		if b.OK == 0 {
			continue
		}
		t := b.Start.Seconds()
		mean.X, mean.Y = append(mean.X, t), append(mean.Y, b.MeanMS)
		p99.X, p99.Y = append(p99.X, t), append(p99.Y, b.P99MS)
	}
	return plots.TimePlot{Title: title, XLabel: "time (s)", YLabel: "response time (ms)", Series: []plots.Series{mean, p99}, Spans: phaseSpans(r), LogY: true}
}

// throughputPlot is a run's migration link and HTTP answers over time.
func throughputPlot(title string, r LoadRecord) plots.TimePlot {
	link := plots.Series{Name: "migration link (Mbit/s)"}
	for _, s := range r.Link {
		link.X, link.Y = append(link.X, s.T), append(link.Y, s.Mbps)
	}
	series := []plots.Series{link}
	if len(r.Buckets) > 0 {
		ok := plots.Series{Name: "requests answered (per s, by send time)"}
		fail := plots.Series{Name: "requests failed (per s)"}
		per := 1 / sampleEvery.Seconds()
		for _, b := range r.Buckets {
			t := b.Start.Seconds()
			ok.X, ok.Y = append(ok.X, t), append(ok.Y, float64(b.OK)*per)
			fail.X, fail.Y = append(fail.X, t), append(fail.Y, float64(b.Errors)*per)
		}
		series = append(series, ok, fail)
	}
	return plots.TimePlot{Title: title, XLabel: "time (s)", YLabel: "Mbit/s; answers/s", Series: series, Spans: phaseSpans(r)}
}

// representative is the verified run with the median migration time among
// runs, or nil.
func representative[R any](runs []R, ok func(R) bool, total func(R) int64) *R {
	var vs []R
	for _, r := range runs {
		if ok(r) {
			vs = append(vs, r)
		}
	}
	if len(vs) == 0 {
		return nil
	}
	slices.SortStableFunc(vs, func(a, b R) int { return int(total(a) - total(b)) })
	return &vs[(len(vs)-1)/2]
}

// WriteUFPEReport writes ufpe.json, ufpe.md and the plots into dir.
func WriteUFPEReport(dir string, r UFPEResult, header string) error {
	if err := writeJSONFile(filepath.Join(dir, "ufpe.json"), r); err != nil {
		return err
	}
	figs, err := ufpePlots(dir, r)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ufpe.md"), []byte(header+r.Markdown()+figs), 0o644)
}

// ufpePlots draws the study's figures and returns the markdown that shows
// them.
func ufpePlots(dir string, r UFPEResult) (string, error) {
	var md strings.Builder
	md.WriteString("\n")
	configs := uniqueConfigs(r.Rows)
	var sizes []int64
	for _, row := range r.Rows {
		if !slices.Contains(sizes, row.MemBytes) {
			sizes = append(sizes, row.MemBytes)
		}
	}
	if len(r.Rows) > 0 {
		cats := make([]string, len(sizes))
		for i, s := range sizes {
			cats[i] = SizeName(s)
		}
		timeBars := plots.Bars{Title: "Migration time under HTTP load (median, min-max)", YLabel: "seconds", Categories: cats}
		respBars := plots.Bars{Title: "Mean response time: during the migration and outside it (median)", YLabel: "ms", Categories: cats}
		for _, c := range configs {
			t := plots.BarSeries{Name: c}
			during, outside := plots.BarSeries{Name: c + " during"}, plots.BarSeries{Name: c + " outside"}
			for _, s := range sizes {
				row := UFPERow{}
				for _, x := range r.Rows {
					if x.MemBytes == s && x.Config == c {
						row = x
					}
				}
				t.Values, t.Low, t.High = append(t.Values, secs(row.TotalMS)), append(t.Low, secs(row.TotalMinMS)), append(t.High, secs(row.TotalMaxMS))
				during.Values, outside.Values = append(during.Values, row.DuringMeanMS), append(outside.Values, row.OutMeanMS)
			}
			timeBars.Series = append(timeBars.Series, t)
			respBars.Series = append(respBars.Series, during, outside)
		}
		if err := timeBars.Save(filepath.Join(dir, "ufpe-time.png")); err != nil {
			return "", err
		}
		if err := respBars.Save(filepath.Join(dir, "ufpe-response.png")); err != nil {
			return "", err
		}
		md.WriteString("![Migration time by RAM size](ufpe-time.png)\n\n![Mean response time during and outside the migration](ufpe-response.png)\n\n")
	}
	for _, s := range sizes {
		for _, c := range configs {
			var runs []UFPERun
			for _, x := range r.Runs {
				if x.MemBytes == s && x.Config == c {
					runs = append(runs, x)
				}
			}
			run := representative(runs, func(x UFPERun) bool { return x.Verified && len(x.Link) > 0 }, func(x UFPERun) int64 { return x.TotalMS })
			if run == nil {
				continue
			}
			name := fmt.Sprintf("ufpe-%s-%s", SizeName(s), c)
			what := fmt.Sprintf("%s, %s, run %d", SizeName(s), c, run.Rep)
			if rp := responsePlot("Response time: "+what, run.LoadRecord); len(rp.Series[0].X) > 0 {
				if err := rp.Save(filepath.Join(dir, name+"-response.png")); err != nil {
					return "", err
				}
				fmt.Fprintf(&md, "![Response time, %s](%s-response.png)\n\n", what, name)
			}
			if err := throughputPlot("Throughput: "+what, run.LoadRecord).Save(filepath.Join(dir, name+"-throughput.png")); err != nil {
				return "", err
			}
			fmt.Fprintf(&md, "![Throughput, %s](%s-throughput.png)\n\n", what, name)
		}
	}
	return md.String(), nil
}

// WriteCloudNetReport writes cloudnet.json, cloudnet.md and the plots into
// dir.
func WriteCloudNetReport(dir string, r CloudNetResult, header string) error {
	if err := writeJSONFile(filepath.Join(dir, "cloudnet.json"), r); err != nil {
		return err
	}
	figs, err := cloudNetPlots(dir, r)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cloudnet.md"), []byte(header+r.Markdown()+figs), 0o644)
}

func cloudNetPlots(dir string, r CloudNetResult) (string, error) {
	var md strings.Builder
	md.WriteString("\n")
	if rs := r.Ratios(); len(rs) > 0 {
		var cats []string
		ours, paper := plots.BarSeries{Name: "vmigrate: optimised / default"}, plots.BarSeries{Name: "CloudNet / Xen default (paper)"}
		for _, x := range rs {
			cats = append(cats, x.Workload+" data", x.Workload+" time", x.Workload+" pause")
			ours.Values = append(ours.Values, x.Data, x.Total, x.Pause)
			paper.Values = append(paper.Values, x.PaperData, x.PaperTotal, x.PaperPs)
		}
		b := plots.Bars{Title: "Optimised over default (lower is better)", YLabel: "ratio", Categories: cats, Series: []plots.BarSeries{ours, paper}}
		if err := b.Save(filepath.Join(dir, "cloudnet-ratios.png")); err != nil {
			return "", err
		}
		md.WriteString("![Optimised over default, ours and CloudNet's](cloudnet-ratios.png)\n\n")
	}
	var cats []string
	for _, w := range CloudNetWorkloads {
		if r.row(w, ModeDefault) != nil || r.row(w, ModeOptimised) != nil {
			cats = append(cats, w)
		}
	}
	if len(cats) == 0 {
		return md.String(), nil
	}
	data := plots.Bars{Title: "Data sent (median, min-max)", YLabel: "MiB", Categories: cats}
	total := plots.Bars{Title: "Total migration time (median, min-max)", YLabel: "seconds", Categories: cats}
	for _, m := range []string{ModeDefault, ModeOptimised} {
		d, t := plots.BarSeries{Name: "vmigrate " + m}, plots.BarSeries{Name: "vmigrate " + m}
		for _, w := range cats {
			row := r.row(w, m)
			if row == nil {
				row = &CloudNetRow{}
			}
			d.Values, d.Low, d.High = append(d.Values, mib(row.WireBytes)), append(d.Low, mib(row.WireMin)), append(d.High, mib(row.WireMax))
			t.Values, t.Low, t.High = append(t.Values, secs(row.TotalMS)), append(t.Low, secs(row.TotalMinMS)), append(t.High, secs(row.TotalMaxMS))
		}
		data.Series, total.Series = append(data.Series, d), append(total.Series, t)
	}
	for i, name := range []string{"Xen default (paper)", "CloudNet (paper)"} {
		d, t := plots.BarSeries{Name: name}, plots.BarSeries{Name: name}
		for _, w := range cats {
			p := CloudNetPapers[w]
			d.Values, t.Values = append(d.Values, p.DataGB[i]*1000*1000*1000/(1<<20)), append(t.Values, p.TotalS[i])
		}
		data.Series, total.Series = append(data.Series, d), append(total.Series, t)
	}
	if err := data.Save(filepath.Join(dir, "cloudnet-data.png")); err != nil {
		return "", err
	}
	if err := total.Save(filepath.Join(dir, "cloudnet-time.png")); err != nil {
		return "", err
	}
	md.WriteString("![Data sent per workload](cloudnet-data.png)\n\n![Total time per workload](cloudnet-time.png)\n\n")
	return md.String(), nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
