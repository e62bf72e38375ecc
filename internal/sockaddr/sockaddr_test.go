package sockaddr

import "testing"

func TestSplit(t *testing.T) {
	for _, tc := range []struct{ addr, network, address string }{
		{"/run/vm.qmp", "unix", "/run/vm.qmp"},
		{"unix:/run/vm.qmp", "unix", "/run/vm.qmp"},
		{"./vm.qmp", "unix", "./vm.qmp"},
		{"vm.qmp", "unix", "vm.qmp"},
		{"tcp:127.0.0.1:4444", "tcp", "127.0.0.1:4444"},
		{"tcp:[::1]:4444", "tcp", "[::1]:4444"},
		{"localhost:4444", "tcp", "localhost:4444"},
		{"[::1]:4444", "tcp", "[::1]:4444"},
		{"dest.example:4444", "tcp", "dest.example:4444"},
	} {
		if n, a := Split(tc.addr); n != tc.network || a != tc.address {
			t.Errorf("Split(%q) = %q, %q; want %q, %q", tc.addr, n, a, tc.network, tc.address)
		}
	}
}
