package agentapi

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/guest/workload"
)

// Disk is the block device of the disk workload, opened so that reads come
// from the device and a write that returned is durable.
type Disk interface {
	workload.Device
	Size() (int64, error)
	Close() error
}

// directDisk is a block device opened O_DIRECT|O_DSYNC: reads and writes
// bypass the guest's page cache, and each write returns only after the
// device acknowledged it (with a flush or FUA), so the QEMU block layer, and
// any drive-mirror job above it, has seen it.
type directDisk struct{ *os.File }

func openDirectDisk(path string) (Disk, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	return directDisk{f}, nil
}

func (d directDisk) Size() (int64, error) {
	n, err := d.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("disk %s size: %w", d.Name(), err)
	}
	return n, nil
}
