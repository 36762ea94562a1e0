//go:build !linux

package main_test

import (
	"errors"
	"os"
)

// openPTY is implemented on Linux only; elsewhere the prompt tests skip.
func openPTY() (control, terminal *os.File, err error) {
	return nil, nil, errors.New("pseudo-terminals are opened on Linux only")
}
