//go:build race

package mongo_test

// raceEnabled is true under -race, which slows FerretDB's query engine about tenfold.
const raceEnabled = true
