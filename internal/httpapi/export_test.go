package httpapi

import "time"

// SetStreamWriteTimeout shortens how long one write to a stream or export client may block,
// for tests of clients that stop reading. Call it before any test runs.
func SetStreamWriteTimeout(d time.Duration) { streamWriteTimeout = d }
