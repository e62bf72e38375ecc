package agentapi

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/vmigrate/vmigrate/guest/workload"
)

var corpus struct {
	once sync.Once
	err  error
}

// loadCorpus maps CorpusFile read-only, once, and gives it to the files
// body: the pages share the initramfs's memory, no copy is made.
func loadCorpus() error {
	corpus.once.Do(func() {
		f, err := os.Open(CorpusFile)
		if err != nil {
			corpus.err = fmt.Errorf("workload: body %s: %w (this guest image has no corpus: rebuild it with vmigrate guest build)", workload.BodyFiles, err)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			corpus.err = fmt.Errorf("workload: body %s: %w", workload.BodyFiles, err)
			return
		}
		b, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			corpus.err = fmt.Errorf("workload: body %s: mmap %s: %w", workload.BodyFiles, CorpusFile, err)
			return
		}
		corpus.err = workload.SetFilesCorpus(b)
	})
	return corpus.err
}
