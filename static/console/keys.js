// Keyboard-first operation (issue 17): j/k move through a list of decisions, Enter opens,
// a/r/m choose, a second key confirms; focus is kept or moved sensibly after every push.
