package agentapi_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/guest/agentapi"
)

func TestParseNet(t *testing.T) {
	tests := []struct {
		cmdline string
		want    agentapi.Net
		wantErr string
	}{
		{"console=ttyS0 vmigrate.ip=10.0.2.15/24", agentapi.Net{Addr: netip.MustParsePrefix("10.0.2.15/24")}, ""},
		{"vmigrate.ip=192.168.7.2/30 vmigrate.gw=192.168.7.1", agentapi.Net{Addr: netip.MustParsePrefix("192.168.7.2/30"), Gateway: netip.MustParseAddr("192.168.7.1")}, ""},
		{"console=ttyS0", agentapi.Net{}, "no vmigrate.ip"},
		{"vmigrate.ip=10.0.2.15", agentapi.Net{}, "ADDR/PREFIX"},
		{"vmigrate.ip=fd00::1/64", agentapi.Net{}, "IPv4"},
		{"vmigrate.ip=10.0.2.15/24 vmigrate.gw=gateway", agentapi.Net{}, "vmigrate.gw"},
	}
	for _, tt := range tests {
		got, err := agentapi.ParseNet(tt.cmdline)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseNet(%q) error = %v, want %q", tt.cmdline, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseNet(%q) = %+v, %v; want %+v", tt.cmdline, got, err, tt.want)
		}
	}
	if _, err := agentapi.ParseNet(""); !errors.Is(err, agentapi.ErrNoIP) {
		t.Errorf("empty cmdline: %v, want ErrNoIP", err)
	}
}
