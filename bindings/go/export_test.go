package multifrost

// LiveHandles is the number of cgo.Handles the package holds.
func LiveHandles() int64 { return liveHandles.Load() }

// CStatusName is the library's name of a status (mf_status_name).
func CStatusName(s Status) string { return cStatusName(s) }
