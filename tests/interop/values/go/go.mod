module github.com/multifrost/libmultifrost/tests/interop/values/go

go 1.23

require github.com/multifrost/libmultifrost/bindings/go v0.0.0

require (
	github.com/vmihailenco/msgpack/v5 v5.4.1 // indirect
	github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
)

replace github.com/multifrost/libmultifrost/bindings/go => ../../../../bindings/go
