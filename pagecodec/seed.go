package pagecodec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/zeebo/blake3"
)

// Seeds are pages the dest end holds before a migration starts: the pages
// of the last stream it decoded (Config.SeedFile), kept after the stream
// ends, whether the migration succeeded or not. When a channel opens, the
// dest end announces them on the channel's return direction, before any
// byte of QEMU's return path:
//
//	"VMPA" u8 version (the codec's, 3)  uvarint count  count x (be32 CRC-32C, 16 bytes of BLAKE3)
//
// and the encoder sends a page it finds there as page-seed (slot number in
// the announcement), after checking the page's BLAKE3 against the
// announced one. The seed file is "VMPS", a version byte (seedFileVersion,
// which does not follow the codec's: the file's format has not changed
// since version 2), be32 count and the pages.
const (
	// seedFileVersion is the seed file's format version.
	seedFileVersion = 2
	announceMagic   = "VMPA"
	seedMagic       = "VMPS"
	seedSumLen      = 16
	// maxAnnounce bounds an announcement: 64 GiB of pages. A dest end
	// with more seeds announces the first maxAnnounce.
	maxAnnounce = 1 << 24
	// announceWait is how long an encoder waits for the announcement
	// before it goes on without seeds (a dest end still reading a large
	// seed file).
	announceWait = 30 * time.Second
)

// seedIndex is the encoder's view of an announcement.
type seedIndex struct {
	byCRC map[uint32]int32
	sums  [][seedSumLen]byte
}

// seedPages are the dest end's seeds: the pages and what it announces.
type seedPages struct {
	pages [][]byte
	crcs  []uint32
	sums  [][seedSumLen]byte
}

func sum16(h *blake3.Hasher, p []byte) (s [seedSumLen]byte) {
	h.Reset()
	h.Write(p)
	var full [32]byte
	copy(s[:], h.Sum(full[:0]))
	return s
}

// loadSeeds reads a seed file; a missing file is no seeds.
func loadSeeds(path string, maxPages int64) (*seedPages, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &seedPages{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("seed file: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var head [len(seedMagic) + 1 + 4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || string(head[:4]) != seedMagic || head[4] != seedFileVersion {
		return nil, fmt.Errorf("seed file %s: not a vmigrate seed file", path)
	}
	n := int64(binary.BigEndian.Uint32(head[5:]))
	if n > maxPages {
		return nil, fmt.Errorf("seed file %s: %d pages, more than the cache limit of %d", path, n, maxPages)
	}
	sp := &seedPages{}
	h := blake3.New()
	for i := range n {
		p := make([]byte, pageSize)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, fmt.Errorf("seed file %s: page %d: %w", path, i, err)
		}
		sp.pages = append(sp.pages, p)
		sp.crcs = append(sp.crcs, crc32.Checksum(p, castagnoli))
		sp.sums = append(sp.sums, sum16(h, p))
	}
	return sp, nil
}

// saveSeeds writes the pages of a decoder's cache as the seed file, then
// as many of the old seeds as the cache's capacity leaves room for (a
// retry that fails early keeps what the attempt before it left), through
// a temporary file so a reader never sees half of one.
func saveSeeds(path string, st *store, old *seedPages) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("seed file: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	var n int64
	for s := int32(0); s < st.next; s++ {
		if st.state[s] != 0 {
			n++
		}
	}
	keep := 0
	if old != nil {
		keep = int(min(int64(len(old.pages)), max(int64(st.capacity)-n, 0)))
	}
	w.WriteString(seedMagic)
	w.WriteByte(seedFileVersion)
	binary.Write(w, binary.BigEndian, uint32(n)+uint32(keep))
	for s := int32(0); s < st.next; s++ {
		if st.state[s] != 0 {
			w.Write(st.page(s))
		}
	}
	for _, p := range old.pagesUpTo(keep) {
		w.Write(p)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("seed file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("seed file: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

func (sp *seedPages) pagesUpTo(n int) [][]byte {
	if sp == nil {
		return nil
	}
	return sp.pages[:n]
}

// appendAnnouncement appends the announcement of sp.
func appendAnnouncement(b []byte, sp *seedPages) []byte {
	b = append(b, announceMagic...)
	b = append(b, version)
	n := min(len(sp.pages), maxAnnounce)
	b = binary.AppendUvarint(b, uint64(n))
	for i := range n {
		b = binary.BigEndian.AppendUint32(b, sp.crcs[i])
		b = append(b, sp.sums[i][:]...)
	}
	return b
}

// readAnnouncement reads an announcement from the return direction.
func readAnnouncement(r *bufio.Reader) (*seedIndex, error) {
	var head [len(announceMagic) + 1]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, fmt.Errorf("pagecodec: no seed announcement from the dest end: %w", err)
	}
	if string(head[:4]) != announceMagic || head[4] != version {
		return nil, &CorruptError{Reason: fmt.Sprintf("seed announcement header %q", head[:])}
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > maxAnnounce {
		return nil, &CorruptError{Reason: fmt.Sprintf("seed announcement of %d pages (%v)", n, err)}
	}
	idx := &seedIndex{byCRC: make(map[uint32]int32, min(n, 1<<16)), sums: make([][seedSumLen]byte, 0, min(n, 1<<16))}
	var e [4 + seedSumLen]byte
	for i := range n {
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return nil, &CorruptError{Reason: fmt.Sprintf("seed announcement cut at page %d", i)}
		}
		crc := binary.BigEndian.Uint32(e[:])
		if _, dup := idx.byCRC[crc]; !dup {
			idx.byCRC[crc] = int32(i)
		}
		idx.sums = append(idx.sums, [seedSumLen]byte(e[4:]))
	}
	return idx, nil
}
