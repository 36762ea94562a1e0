//go:build race

package main

// raceBuild makes TestMain build the service with the race detector when the
// tests run with -race, so the end-to-end tests check the service too.
const raceBuild = true
