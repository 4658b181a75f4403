// Package fuzz holds the fuzz targets that need several of Moat's packages
// at once, such as a whole proxy with real upstream processes. Targets that
// belong to one package live in that package's *_fuzz_test.go files; the
// README in this directory lists them all and says how to run them.
package fuzz
