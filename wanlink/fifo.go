package wanlink

// fifo is a growable ring of values. Its length is bounded by its user:
// the queues of a flow hold at most one chunk per byte of the window, and
// in practice far fewer since chunks coalesce.
type fifo[T any] struct {
	buf  []T
	head int
	n    int
}

func (q *fifo[T]) len() int { return q.n }

func (q *fifo[T]) push(v T) {
	if q.n == len(q.buf) {
		grown := make([]T, max(8, 2*len(q.buf)))
		for i := range q.n {
			grown[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = v
	q.n++
}

// front returns the oldest value; the pointer is valid until the next push
// or pop.
func (q *fifo[T]) front() *T {
	if q.n == 0 {
		return nil
	}
	return &q.buf[q.head]
}

// back returns the newest value; the pointer is valid until the next push
// or pop.
func (q *fifo[T]) back() *T {
	if q.n == 0 {
		return nil
	}
	return &q.buf[(q.head+q.n-1)%len(q.buf)]
}

func (q *fifo[T]) pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return v
}
