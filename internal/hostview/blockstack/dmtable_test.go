package blockstack

import (
	"encoding/binary"
	"testing"
)

// TestParseDMStatus decodes what DM_TABLE_STATUS with the IMA flag
// returns for a dm-crypt device (drivers/md/dm-crypt.c crypt_status).
func TestParseDMStatus(t *testing.T) {
	le := binary.LittleEndian
	buf := make([]byte, 1024)
	le.PutUint32(buf[16:], dmIoctlSize)
	le.PutUint32(buf[24:], 1)
	spec := buf[dmIoctlSize:]
	copy(spec[24:], "crypt")
	params := "target_name=crypt,target_version=1.24.0,allow_discards=n,same_cpu=n,submit_from_crypt_cpus=n,no_read_workqueue=n,no_write_workqueue=n,iv_large_sectors=n,cipher_string=cipher_null-ecb,key_size=0,key_parts=1,key_extra_size=0,key_mac_size=0;"
	copy(spec[dmTargetSpecSize:], params)
	s, err := parseDMStatus(buf, le)
	if err != nil {
		t.Fatal(err)
	}
	if c := imaCipher(s); c != "cipher_null-ecb" || !NullCipher(c) {
		t.Errorf("got cipher %q from %q", c, s)
	}
	le.PutUint32(buf[16:], 8) // data_start inside the header: malformed
	if _, err := parseDMStatus(buf, le); err == nil {
		t.Error("a malformed status was accepted")
	}
}
