package cli

import "errors"

// ExitError asks main to exit with a specific code without printing a stack
// or usage text, for example when --fail-on matched a finding.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode maps an error returned by a command to the process exit code:
// the code of an ExitError, or 1 for any other error.
func ExitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}
