"""The Orthanc peer starts, takes a file over REST and over DICOM, and answers QIDO-RS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
from peers import loopback
from peers.orthanc import start_orthanc, storescu

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def test_orthanc_takes_a_file_over_rest_and_dicom_and_answers_qido(tmp_path: Path) -> None:
    ct, mr = TEST_FILES / "CT_small.dcm", TEST_FILES / "MR_small.dcm"
    ct_ds, mr_ds = pydicom.dcmread(ct), pydicom.dcmread(mr)
    with start_orthanc(tmp_path / "orthanc") as orthanc:
        assert orthanc.http_url.startswith("http://127.0.0.1:")
        # both of its servers listen on the loopback only
        http_port = int(orthanc.http_url.rsplit(":", 1)[1].split("/")[0])
        assert loopback.listening(http_port) == ["127.0.0.1"]
        assert loopback.listening(orthanc.dicom_port) == ["127.0.0.1"]
        assert orthanc.upload(ct)["Status"] == "Success"
        storescu([mr], port=orthanc.dicom_port, called_aet=orthanc.aet,
                 workdir=tmp_path / "scu")
        orthanc.wait_instances(2, timeout=30)

        r = httpx.get(f"{orthanc.dicomweb_url}/studies",
                      params={"PatientID": ct_ds.PatientID},
                      headers={"Accept": "application/dicom+json"}, timeout=10)
        assert r.status_code == 200, r.text
        studies = r.json()
        assert [s["0020000D"]["Value"][0] for s in studies] == [ct_ds.StudyInstanceUID]

        r = httpx.get(f"{orthanc.dicomweb_url}/instances",
                      params={"SOPInstanceUID": mr_ds.SOPInstanceUID}, timeout=10)
        assert r.status_code == 200, r.text
        assert [i["00080018"]["Value"][0] for i in r.json()] == [mr_ds.SOPInstanceUID]
