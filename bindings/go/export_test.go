package multifrost

// LiveHandles is the number of cgo.Handles the package holds.
func LiveHandles() int64 { return liveHandles.Load() }
