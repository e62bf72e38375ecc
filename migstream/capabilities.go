package migstream

import (
	"fmt"
	"slices"
	"strings"
)

// formatChanging are the migration capabilities whose streams a page-aware
// proxy cannot carry (../shared/docs/qemu-migration-stream.md, section 5):
// pages leave the main connection (multifd, postcopy-preempt), postcopy
// and COLO change the stream's structure, and block, dirty-bitmap and
// mapped-ram sections cannot be parsed.
var formatChanging = []string{
	"multifd", "postcopy-ram", "postcopy-preempt", "x-colo", "dirty-bitmaps",
	"block", "mapped-ram", "background-snapshot", "rdma-pin-all",
}

// CheckCapabilities returns an error naming every enabled capability that
// changes the stream's format, and nil if there is none. Capabilities not
// named here (xbzrle, compress, return-path, events, auto-converge, ...)
// leave the framing as the Reader knows it.
func CheckCapabilities(enabled []string) error {
	var bad []string
	for _, c := range enabled {
		if slices.Contains(formatChanging, c) {
			bad = append(bad, c)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("capabilities %s change the migration stream's format", strings.Join(bad, ", "))
}
