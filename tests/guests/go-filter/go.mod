module hookbus.test/go-filter

go 1.24
