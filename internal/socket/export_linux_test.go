package socket

// DescendsByPID is the walk of Descends alone.
var DescendsByPID = descends
