package manifest

import (
	"context"
	"fmt"
	"io/fs"
	"sync"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Reading changed files is three steps: each file is looked at and read
// in path order (read), the files read are decoded side by side (decode:
// a file's decoding depends on its bytes and its own last decodings
// alone), and what they define is recorded in path order again (apply),
// so the tree sees the same sequence as if they were read one by one.
// When every tenant's file is rewritten at once, decoding is most of the
// source's work, and this spreads it over the cores.

// pending is one file read and waiting to be decoded and applied.
type pending struct {
	p    string
	st   *fileState
	info fs.FileInfo
	data []byte

	decoded []Decoded // set by decode
	docs    docCache
	failed  string // set by decode when decoding panicked
}

// decodeFile decodes one file; a variable so a test can make it fail.
var decodeFile = decodeDocs

// batchBytes bounds the bytes of the files held read at once, so the first
// read of a large directory does not hold all of it in memory.
const batchBytes = 32 << 20

// refreshAll reads again each of paths that changed (complete: those known
// to be whole), in batches of at most batchBytes. retry is true when some
// file was being written and must be read again later.
func (t *tree) refreshAll(ctx context.Context, fsys fs.FS, paths []string, complete map[string]bool) (retry bool, err error) {
	var batch []*pending
	held := 0
	flush := func() {
		decodeAll(batch, t.limits, t.workers)
		for _, job := range batch {
			t.apply(job)
		}
		batch, held = batch[:0], 0
	}
	for _, p := range paths {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		job, again := t.read(ctx, fsys, p, complete[p])
		retry = retry || again
		if job == nil {
			continue
		}
		if held+len(job.data) > batchBytes && len(batch) > 0 {
			flush()
		}
		batch = append(batch, job)
		held += len(job.data)
	}
	flush()
	return retry, nil
}

// read looks at p and reads it if it changed since it was decoded, keeping
// its last good objects when it cannot be read; a file known to be whole
// (it was renamed into place) is read without waiting for it to settle.
// It returns the file read, or nil, and whether p must be looked at again
// later.
func (t *tree) read(ctx context.Context, fsys fs.FS, p string, whole bool) (job *pending, retry bool) {
	st := t.files[p]
	if st == nil {
		st = &fileState{objs: map[model.Key]*model.Object{}, hash: map[model.Key]string{}}
		t.files[p] = st
	}
	fail := func(format string, args ...any) (*pending, bool) {
		st.warn = &snapshot.Diagnostic{Severity: snapshot.SeverityError, Origin: p,
			Message: fmt.Sprintf(format, args...)}
		st.read = false
		t.redo[p] = true
		return nil, false
	}
	info, err := fs.Stat(fsys, p) // follows symbolic links
	if err != nil {
		return fail("cannot be read (%v); its objects are kept as last read", err)
	}
	if !info.Mode().IsRegular() {
		return fail("is not a regular file (%s); only regular files are read, and its objects are kept as last read", info.Mode().Type())
	}
	if info.Size() > t.limits.FileBytes {
		return fail("is %d bytes, more than the %d a manifest file may have (--max-file-bytes); split it; its objects are kept as last read", info.Size(), t.limits.FileBytes)
	}
	if st.read && info.Size() == st.size && info.ModTime().Equal(st.mtime) {
		return nil, false // unchanged since it was decoded
	}
	if !whole && t.limits.Settle > 0 && t.now().Sub(info.ModTime()) < t.limits.Settle {
		return nil, true // being written: decode it once it is left alone
	}
	data, err := readFile(ctx, fsys, p, t.limits)
	if err != nil {
		return fail("cannot be read (%v); its objects are kept as last read", err)
	}
	if after, err := fs.Stat(fsys, p); err != nil || after.Size() != info.Size() || !after.ModTime().Equal(info.ModTime()) || int64(len(data)) != info.Size() {
		return nil, true // changed while it was read
	}
	return &pending{p: p, st: st, info: info, data: data}, false
}

// decodeAll decodes the files of jobs, up to workers at once. Each job is
// decoded by one goroutine and touches nothing shared.
func decodeAll(jobs []*pending, limits Limits, workers int) {
	workers = min(workers, len(jobs))
	if workers <= 1 {
		for _, job := range jobs {
			job.decode(limits)
		}
		return
	}
	next := make(chan *pending)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for job := range next {
				job.decode(limits)
			}
		})
	}
	for _, job := range jobs {
		next <- job
	}
	close(next)
	wg.Wait()
}

// decode decodes the file, reusing its documents' last decodings. A panic
// (decoding recovers its own; this is the last guard, since a goroutine's
// panic would end the process) fails the file as an unreadable one does.
func (job *pending) decode(limits Limits) {
	defer func() {
		if r := recover(); r != nil {
			job.failed = fmt.Sprint(r)
		}
	}()
	job.decoded, job.docs = decodeFile(job.p, job.data, limits, job.st.docs)
}

// apply records what a decoded file defines. A file whose decoding failed
// keeps its last good objects, with a diagnostic, and is read again on
// the next change.
func (t *tree) apply(job *pending) {
	st := job.st
	if job.failed != "" {
		st.warn = &snapshot.Diagnostic{Severity: snapshot.SeverityError, Origin: job.p,
			Message: fmt.Sprintf("could not be decoded (internal error: %s); its objects are kept as last read; please report this file", job.failed)}
		st.read = false
		t.redo[job.p] = true
		return
	}
	st.size, st.mtime, st.read, st.warn = job.info.Size(), job.info.ModTime(), true, nil
	st.docs = job.docs
	old, oldObjs := st.order, st.objs
	t.replace(st, job.decoded)
	if t.touchAll {
		t.setKeys(job.p, old, st.order)
		return
	}
	t.setChanged(job.p, old, oldObjs, st)
}

// setChanged is setKeys for a file read again, touching only the keys
// whose object it added, dropped or changed: a document whose bytes did
// not change keeps its decoded object, and its key need not be resolved
// again (a file of 439 documents, 38 of them edited, touched all 439).
func (t *tree) setChanged(p string, old []model.Key, oldObjs map[model.Key]*model.Object, st *fileState) {
	var gone, changed []model.Key
	for _, k := range old {
		if n, ok := st.objs[k]; !ok {
			gone = append(gone, k)
		} else if n != oldObjs[k] {
			changed = append(changed, k)
		}
	}
	for _, k := range st.order {
		if _, ok := oldObjs[k]; !ok {
			changed = append(changed, k)
		}
	}
	t.setKeys(p, gone, nil)
	t.setKeys(p, nil, changed)
}
