package command

import (
	"flag"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/pagecodec"
)

func codecFrom(t *testing.T, def bool, args ...string) (bool, pagecodec.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	for _, f := range wanFlags() {
		if err := f.Apply(fs); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	c := cli.NewContext(&cli.App{}, fs, nil)
	c.Command = &cli.Command{Flags: wanFlags()}
	codec, err := codecFlags(c, def)
	if err != nil || codec == nil {
		return false, pagecodec.Config{}, err
	}
	return true, codec.Config(), nil
}

func TestCodecFlags(t *testing.T) {
	for _, tc := range []struct {
		def     bool
		args    []string
		on      bool
		effort  pagecodec.Effort
		wantErr string
	}{
		{def: true, on: true},
		{def: false, on: false},
		{def: false, args: []string{"--codec", "on"}, on: true},
		{def: true, args: []string{"--codec", "off"}, on: false},
		{def: true, args: []string{"--codec-cache", "512M"}, on: true},
		{def: true, args: []string{"--codec", "maybe"}, wantErr: `--codec "maybe": want on or off`},
		{def: true, args: []string{"--codec-cache", "1"}, wantErr: "want a size of at least 4K"},
		{def: true, args: []string{"--codec", "off", "--codec-cache", "1G"}, wantErr: "needs the codec"},
		{def: true, args: []string{"--codec", "off", "--codec-seed", "/tmp/x"}, wantErr: "needs the codec"},
		{def: true, args: []string{"--codec-seed", "/tmp/x"}, on: true},
		{def: true, args: []string{"--codec-effort", "max"}, on: true, effort: pagecodec.EffortMax},
		{def: false, args: []string{"--codec", "on", "--codec-effort", "fast"}, on: true, effort: pagecodec.EffortFast},
		{def: true, args: []string{"--codec-effort", "best"}, wantErr: `codec effort "best": want auto, fast, lz4 or max`},
		{def: true, args: []string{"--codec", "off", "--codec-effort", "lz4"}, wantErr: "needs the codec"},
		{def: true, args: []string{"--codec", "off", "--codec-effort", "auto"}, wantErr: "needs the codec"},
	} {
		on, cfg, err := codecFrom(t, tc.def, tc.args...)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || exitCode(err) != ExitUsage {
				t.Errorf("%v: err %v, want usage error %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || on != tc.on || cfg.Effort != tc.effort {
			t.Errorf("%v (default %v): on %v, effort %v, err %v; want on %v, effort %v", tc.args, tc.def, on, cfg.Effort, err, tc.on, tc.effort)
		}
	}
}

// The transport --codec builds: parsing the stream only with the codec on,
// and through the tunnel even without a link when asked for.
func TestWANTransportCodec(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		path, parses bool
		wantErr      string
	}{
		{args: nil, path: false},
		{args: []string{"--codec-effort", "max"}, wantErr: "the codec runs in the tunnel"},
		{args: []string{"--codec-cache", "1G"}, wantErr: "the codec runs in the tunnel"},
		{args: []string{"--codec", "on", "--codec-effort", "max"}, path: true, parses: true},
		{args: []string{"--wan-bandwidth", "100mbit"}, path: true, parses: true},
		{args: []string{"--wan-bandwidth", "100mbit", "--codec", "off"}, path: true, parses: false},
		{args: []string{"--codec", "on"}, path: true, parses: true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		flags := append(wanFlags(), tunnelFlags()...)
		for _, f := range flags {
			if err := f.Apply(fs); err != nil {
				t.Fatal(err)
			}
		}
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		c := cli.NewContext(&cli.App{}, fs, nil)
		c.Command = &cli.Command{Flags: flags}
		tr, _, err := wanTransport(c, &env{log: zap.NewNop()}, t.TempDir())
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || exitCode(err) != ExitUsage {
				t.Errorf("%v: err %v, want usage error %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if (tr != nil) != tc.path {
			t.Errorf("%v: transport %v, want one: %v", tc.args, tr, tc.path)
			continue
		}
		if tr == nil {
			continue
		}
		p, ok := tr.(interface{ ParsesStream() bool })
		if !ok || p.ParsesStream() != tc.parses {
			t.Errorf("%v: parses the stream %v, want %v", tc.args, ok && p.ParsesStream(), tc.parses)
		}
		tr.Close()
	}
}
