//go:build !race

package multifrost_test

const raceEnabled = false
