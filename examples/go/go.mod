module sami-gateway/examples/go

go 1.19
