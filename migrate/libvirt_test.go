package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/vmigrate/vmigrate/migrate"
)

// testURI is a libvirt test-driver host read from testdata: real libvirt,
// no daemon, for the preflight's refusals.
func testURI(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return "test://" + p
}

func TestRunLibvirtPreflightRefuses(t *testing.T) {
	src := testURI(t, "libvirt-src.xml")
	cases := []struct {
		name, domain, dst string
		srcURI            string
		want              error
	}{
		{name: "unknown domain", domain: "nosuch", dst: testURI(t, "libvirt-dst-empty.xml"), want: migrate.ErrNoDomain},
		{name: "domain not running", domain: "stopped", dst: testURI(t, "libvirt-dst-empty.xml"), want: migrate.ErrSourceNotRunning},
		{name: "destination runs it", domain: "web", dst: testURI(t, "libvirt-dst-busy.xml"), want: migrate.ErrDomainOnDest},
		{name: "source unreachable", domain: "web", srcURI: "qemu+unix:///system?socket=/nonexistent/sock", dst: testURI(t, "libvirt-dst-empty.xml"), want: migrate.ErrUnreachable},
		{name: "destination unreachable", domain: "web", dst: "qemu+unix:///system?socket=/nonexistent/sock", want: migrate.ErrUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := src
			if tc.srcURI != "" {
				s = tc.srcURI
			}
			res, err := migrate.RunLibvirt(context.Background(), migrate.LibvirtOptions{Domain: tc.domain, SrcURI: s, DstURI: tc.dst})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var me *migrate.Error
			if !errors.As(err, &me) || me.Stage != migrate.StagePreflight {
				t.Fatalf("err = %#v, want a preflight *migrate.Error", err)
			}
			if res.Status != migrate.StatusFailed || res.Stage != migrate.StagePreflight || len(res.Passes) != 0 {
				t.Errorf("result %+v, want a failed preflight with no passes", res)
			}
		})
	}
}
