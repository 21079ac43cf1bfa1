//go:build race

package multifrost_test

const raceEnabled = true
