// store tests: see the whole-node simulator
