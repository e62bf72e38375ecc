package wanpath

import (
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
)

func TestWindowFor(t *testing.T) {
	tests := []struct {
		link wanlink.Config
		want int
	}{
		{wanlink.Config{}, tunnel.DefaultWindow},
		{wanlink.Config{Bandwidth: 10e6, RTT: 10 * time.Millisecond}, tunnel.DefaultWindow}, // 12.5 KB BDP
		{wanlink.Config{Bandwidth: 100e6, RTT: 50 * time.Millisecond}, 1250000},             // 2 x 625 KB
		{wanlink.Config{Bandwidth: 1e9, RTT: 100 * time.Millisecond}, 25000000},
		{wanlink.Config{Bandwidth: 1e12, RTT: time.Second}, tunnel.MaxWindow},
	}
	for _, tc := range tests {
		if got := WindowFor(tc.link); got != tc.want {
			t.Errorf("WindowFor(%v) = %d, want %d", tc.link, got, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without a directory succeeded")
	}
	if _, err := New(Config{Dir: "/tmp", Link: &wanlink.Config{RTT: -time.Second}}); err == nil {
		t.Error("New with a negative RTT succeeded")
	}
	p, err := New(Config{Dir: "/tmp", Link: &wanlink.Config{Bandwidth: 100e6, RTT: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Tunnel.Window != 1250000 || p.cfg.DestTunnel.Window != 1250000 {
		t.Errorf("windows %d/%d, want the link's 2 x BDP", p.cfg.Tunnel.Window, p.cfg.DestTunnel.Window)
	}
}
