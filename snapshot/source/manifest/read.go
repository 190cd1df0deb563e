package manifest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Reading a changed file is four steps: it is looked at (look: its stat,
// on the tree's goroutine), read (load) and decoded (decode), which depend
// on its bytes and its own last decodings alone and touch nothing of the
// tree, and what it defines is recorded (apply, on the tree's goroutine
// again). A one-shot read (scan, refreshAll: the first state, Load and
// `xdshard check`) decodes the files read side by side, up to a worker per
// core, and applies them in path order; a Source following the directory
// reads and decodes each file on a goroutine of its own and applies it
// when it is done (source.go), so a file slow to decode holds up no other.
// Either way what is served does not depend on the order files are
// applied in (tree.resolve). When every tenant's file is rewritten at
// once, decoding is most of the source's work, and this spreads it over
// the cores.

// pending is one file looked at, to be read, decoded and applied.
type pending struct {
	p     string
	st    *fileState
	info  fs.FileInfo // as looked at
	cache docCache    // st.docs as looked at: read by the decoding alone
	data  []byte

	readErr error // set by load: it could not be read
	changed bool  // set by load: it changed while it was read

	decoded []Decoded // set by decode
	docs    docCache
	refused error  // set by decode: the file is refused whole (*tooExpandedError)
	failed  string // set by decode when decoding panicked
	stopped bool   // set by decode when its context ended first: nothing to apply

	seen   time.Time          // for the source: the first event it answers
	start  time.Time          // when it was looked at
	cancel context.CancelFunc // ends its read and decoding
}

// decodeFile decodes one file; a variable so a test can make it fail or
// slow.
var decodeFile = decodeDocs

// batchBytes bounds the bytes of the files held read at once, so the first
// read of a large directory does not hold all of it in memory.
const batchBytes = 32 << 20

// refreshAll reads again each of paths that changed (complete: those known
// to be whole), in batches of at most batchBytes. It returns the paths
// being written, to be read again once they settle.
func (t *tree) refreshAll(ctx context.Context, fsys fs.FS, paths []string, complete map[string]bool) (retry []string, err error) {
	var batch []*pending
	held := 0
	flush := func() {
		decodeAll(ctx, batch, t.limits, t.workers)
		for _, job := range batch {
			if t.apply(job) {
				retry = append(retry, job.p)
			}
		}
		batch, held = batch[:0], 0
	}
	for _, p := range paths {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		job, again := t.look(fsys, p, complete[p])
		if again {
			retry = append(retry, p)
		}
		if job == nil {
			continue
		}
		if job.load(ctx, fsys, t.limits); job.readErr != nil || job.changed {
			if t.apply(job) {
				retry = append(retry, p)
			}
			continue
		}
		if held+len(job.data) > batchBytes && len(batch) > 0 {
			flush()
		}
		batch = append(batch, job)
		held += len(job.data)
	}
	flush()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return retry, nil
}

// look stats p and says whether it must be read: a job, when it changed
// since it was decoded; retry, when it is being written and must be
// looked at again once it settled. A file known to be whole (renamed into
// place) is read without waiting for it to settle. One that cannot be
// read, is not a regular file or is too large keeps its last good objects,
// with a diagnostic.
func (t *tree) look(fsys fs.FS, p string, whole bool) (job *pending, retry bool) {
	st := t.files[p]
	if st == nil {
		st = &fileState{objs: map[model.Key]*model.Object{}, hash: map[model.Key]string{}}
		t.files[p] = st
	}
	fail := func(format string, args ...any) (*pending, bool) {
		t.fail(p, st, fmt.Sprintf(format, args...))
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
	if whole {
		st.wholeSize, st.wholeMtime = info.Size(), info.ModTime()
	} else {
		whole = !st.wholeMtime.IsZero() && info.Size() == st.wholeSize && info.ModTime().Equal(st.wholeMtime)
	}
	if !whole && t.limits.Settle > 0 && t.now().Sub(info.ModTime()) < t.limits.Settle {
		return nil, true // being written: decode it once it is left alone
	}
	return &pending{p: p, st: st, info: info, cache: st.docs}, false
}

// fail records why p could not be read: its objects are kept, and it is
// read again on its next change.
func (t *tree) fail(p string, st *fileState, msg string) {
	st.warn = &snapshot.Diagnostic{Severity: snapshot.SeverityError, Origin: p, Message: msg}
	st.read = false
	t.redo[p] = true
}

// load reads the file, bounded in size and time, and checks it did not
// change meanwhile. It touches nothing of the tree.
func (job *pending) load(ctx context.Context, fsys fs.FS, l Limits) {
	data, err := readFile(ctx, fsys, job.p, l)
	if err != nil {
		job.readErr = err
		return
	}
	info := job.info
	if after, err := fs.Stat(fsys, job.p); err != nil || after.Size() != info.Size() || !after.ModTime().Equal(info.ModTime()) || int64(len(data)) != info.Size() {
		job.changed = true
		return
	}
	job.data = data
}

// decodeAll decodes the files of jobs, up to workers at once. Each job is
// decoded by one goroutine and touches nothing shared.
func decodeAll(ctx context.Context, jobs []*pending, limits Limits, workers int) {
	workers = min(workers, len(jobs))
	if workers <= 1 {
		for _, job := range jobs {
			job.decode(ctx, limits)
		}
		return
	}
	next := make(chan *pending)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for job := range next {
				job.decode(ctx, limits)
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
// It touches nothing of the tree, and stops between documents when ctx
// ends (the job is then dropped).
func (job *pending) decode(ctx context.Context, limits Limits) {
	defer func() {
		if r := recover(); r != nil {
			job.failed = fmt.Sprint(r)
		}
	}()
	var err error
	job.decoded, job.docs, err = decodeFile(ctx, job.p, job.data, limits, job.cache)
	if tooBig := (*tooExpandedError)(nil); errors.As(err, &tooBig) {
		job.refused = err
	} else if err != nil {
		job.stopped = true
	}
}

// apply records what was read of a file, and says whether it must be
// looked at again once it settled (it changed while it was read). A file
// that could not be read or decoded keeps its last good objects, with a
// diagnostic; one refused whole (its aliases expand too far) is not
// decoded again until it changes.
func (t *tree) apply(job *pending) (retry bool) {
	st := job.st
	switch {
	case job.stopped:
		return false
	case job.readErr != nil:
		t.fail(job.p, st, fmt.Sprintf("cannot be read (%v); its objects are kept as last read", job.readErr))
		return false
	case job.changed:
		return true
	case job.failed != "":
		t.fail(job.p, st, fmt.Sprintf("could not be decoded (internal error: %s); its objects are kept as last read; please report this file", job.failed))
		return false
	case job.refused != nil:
		st.size, st.mtime, st.read = job.info.Size(), job.info.ModTime(), true
		st.warn = &snapshot.Diagnostic{Severity: snapshot.SeverityError, Origin: job.p, Message: job.refused.Error() + "; its objects are kept as last read"}
		t.redo[job.p] = true
		return false
	}
	st.size, st.mtime, st.read, st.warn = job.info.Size(), job.info.ModTime(), true, nil
	st.docs = job.docs
	old, oldObjs := st.order, st.objs
	t.replace(st, job.decoded)
	if t.touchAll {
		t.setKeys(job.p, old, st.order)
		return false
	}
	t.setChanged(job.p, old, oldObjs, st)
	return false
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
