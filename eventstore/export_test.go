package eventstore

// SetDefaultCodec makes c the Codec of every Registry without one, for
// running the package's tests with another Codec (TestMain).
func SetDefaultCodec(c Codec) { defaultCodec = c }
