package command

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/stopcopy"
)

// policyFrom parses args with policyFlags and builds the policy.
func policyFrom(t *testing.T, args ...string) (stopcopy.Policy, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	for _, f := range policyFlags() {
		if err := f.Apply(fs); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	app := &cli.App{}
	c := cli.NewContext(app, fs, nil)
	c.Command = &cli.Command{Flags: policyFlags()}
	return buildPolicy(c)
}

func TestBuildPolicy(t *testing.T) {
	tests := []struct {
		args    []string
		want    stopcopy.Policy
		wantErr string
	}{
		{args: nil, want: stopcopy.Smart{Window: 5}},
		{args: []string{"--policy", "xen"}, want: stopcopy.Xen{}},
		{args: []string{"--policy", "qemu"}, want: stopcopy.QEMU{}},
		{args: []string{"--window", "7"}, want: stopcopy.Smart{Window: 7}},
		{args: []string{"--policy", "xen", "--max-time", "10m", "--max-bytes", "2G", "--on-budget", "abort"},
			want: stopcopy.Budget{Inner: stopcopy.Xen{}, MaxTime: 10 * time.Minute, MaxBytes: 2 << 30, OnBreach: stopcopy.Abort}},
		{args: []string{"--max-downtime", "2s"}, want: stopcopy.Budget{Inner: stopcopy.Smart{Window: 5}, MaxDowntime: 2 * time.Second, OnBreach: stopcopy.StopAndCopy}},
		{args: []string{"--policy", "linux"}, wantErr: "--policy"},
		{args: []string{"--window", "1"}, wantErr: "--window"},
		{args: []string{"--max-bytes", "lots"}, wantErr: "--max-bytes"},
		{args: []string{"--max-time", "1m", "--on-budget", "panic"}, wantErr: "--on-budget"},
	}
	for _, tc := range tests {
		got, err := policyFrom(t, tc.args...)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if got.Name() != tc.want.Name() {
			t.Errorf("%v: policy %s, want %s", tc.args, got.Name(), tc.want.Name())
		}
		if b, ok := tc.want.(stopcopy.Budget); ok {
			gb, ok := got.(stopcopy.Budget)
			if !ok || gb.MaxTime != b.MaxTime || gb.MaxBytes != b.MaxBytes || gb.MaxDowntime != b.MaxDowntime || gb.OnBreach != b.OnBreach || gb.Inner.Name() != b.Inner.Name() {
				t.Errorf("%v: %+v, want %+v", tc.args, got, tc.want)
			}
		}
	}
}
