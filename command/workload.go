package command

import (
	"fmt"
	"strings"

	"github.com/vmigrate/vmigrate/guest/workload"
)

// workloadKeys maps the --workload parameter names to the guest's kernel
// command line keys, so one parser (the guest's) reads both.
var workloadKeys = map[string]string{
	"wss":      workload.KeyWSS,
	"rate":     workload.KeyPagesPerSec,
	"bpp":      workload.KeyBytesPerPage,
	"hot":      workload.KeyHot,
	"body":     workload.KeyBody,
	"disk":     workload.KeyDiskWSS,
	"diskrate": workload.KeyDiskRate,
}

// parseWorkload reads "idle" or
// "memdirty[:wss=256M,rate=5000,bpp=8,hot=0.1:0.9,body=text,disk=16M,diskrate=200]"
// and applies the guest's defaults for a guest of mem bytes. disk is the
// working set on the guest's disk (/dev/vda, which the lab must provide) and
// diskrate the 4 KiB blocks written per second there.
func parseWorkload(spec string, mem int64) (workload.Config, error) {
	name, params, _ := strings.Cut(spec, ":")
	words := []string{workload.KeyWorkload + "=" + name}
	if params != "" {
		if name != workload.MemDirty {
			return workload.Config{}, fmt.Errorf("%q: only memdirty takes parameters", spec)
		}
		for _, kv := range strings.Split(params, ",") {
			k, v, ok := strings.Cut(kv, "=")
			key, known := workloadKeys[k]
			if !ok || !known || v == "" {
				return workload.Config{}, fmt.Errorf("%q: parameter %q: want wss=SIZE, rate=PAGES/S, bpp=BYTES, hot=FRACTION:WEIGHT, body=random|text|files, disk=SIZE or diskrate=BLOCKS/S", spec, kv)
			}
			words = append(words, key+"="+v)
		}
	}
	c, err := workload.ParseCmdline(strings.Join(words, " "))
	if err != nil {
		return workload.Config{}, err
	}
	c = c.WithDefaults(mem)
	if err := c.Validate(); err != nil {
		return workload.Config{}, err
	}
	if c.WSSBytes > mem*3/4 {
		return workload.Config{}, fmt.Errorf("%q: working set %s leaves too little of the guest's %s for its kernel", spec, workload.FormatSize(c.WSSBytes), workload.FormatSize(mem))
	}
	return c, nil
}
