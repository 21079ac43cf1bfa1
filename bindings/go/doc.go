// Package multifrost calls functions in worker processes as if they were
// local, over the libmultifrost C library (cgo): spawn or connect,
// heartbeats, circuit breaker, restarts and the service registry all live
// in the library, and everything speaks the comlink_ipc_v4 protocol, so Go
// parents and workers interoperate with C, C++, Node and Python ones.
//
// A parent:
//
//	p, err := multifrost.Spawn(ctx, "./math_worker", nil, nil)
//	if err != nil { ... }
//	defer p.Close()
//	var sum int
//	err = p.Call(ctx, "add", &sum, 1, 2) // sum == 3
//	var re *multifrost.RemoteError
//	if errors.As(err, &re) { fmt.Println(re.Message) }
//
// A worker:
//
//	w, _ := multifrost.NewWorker("") // "" = spawn mode; "my-service" = connect mode
//	w.Handle("add", func(a, b int) int { return a + b })
//	err := w.Serve(ctx) // until ctx ends, a shutdown message, SIGINT or SIGTERM
//
// Cancellation runs end to end: a call whose ctx ends returns at once
// (ErrCancelled with context.Canceled, or ErrTimeout with
// context.DeadlineExceeded), the worker is told, and a handler that takes
// a context.Context sees that ctx cancelled (context.Cause: ErrCancelled).
//
// Streams: a handler that takes a Yield sends items one at a time, and
// the caller ranges over them (Parent.Stream, StreamOf); breaking out of
// the loop closes the stream and the handler's next yield fails with
// ErrCancelled.
//
// The library is found with pkg-config (`#cgo pkg-config: multifrost`):
// install it with `make install` in the repository (PREFIX=... for another
// place, then PKG_CONFIG_PATH=<prefix>/lib/pkgconfig). The repository's tests
// use the checkout's build through build/pkgconfig/multifrost.pc (make test-go).
package multifrost
